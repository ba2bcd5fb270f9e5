"""What the statistics page shows, and nothing that computes it: the
metrics with their buckets and chart settings, and the thresholds counted.
The server imports this; the build's numpy and Arrow work is in stats.py,
which a server process never loads."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    title: str  # chart title
    label: str  # x-axis label
    start: float  # buckets of ``step`` from ``start`` to ``stop``, plus an
    stop: float  # underflow (< start) and an overflow (>= stop) bucket
    step: float
    integer: bool = False  # whole numbers (bucket 60-69 rather than 60-70)
    markers: tuple = ()  # (value, label): lines drawn on the chart
    log: bool = False  # chart on a log scale (a few big buckets, a long thin tail)


METRICS = {
    "aesthetic": Metric("Aesthetic score", "aesthetic score (LAION predictor)", 0, 10, 0.1),
    "punsafe": Metric(
        "punsafe: probability that the image is unsafe", "punsafe", 0, 1, 0.05,
        markers=((0.5, "0.5: possibly unsafe"),), log=True,
    ),
    "pwatermark": Metric(
        "pwatermark: probability of a watermark", "pwatermark", 0, 1, 0.05,
        markers=((0.8, "0.8: probably watermarked"),),
    ),
    "width": Metric("Width", "width in pixels", 0, 4096, 128, integer=True),
    "height": Metric("Height", "height in pixels", 0, 4096, 128, integer=True),
    "aspect_ratio": Metric("Aspect ratio (width / height)", "width / height", 0, 4, 0.1),
    "caption_length": Metric("Caption length", "characters in the caption", 0, 400, 10, integer=True),
}

# Rows over the thresholds people quote for LAION (as in build_info).
THRESHOLDS = {
    "punsafe_over_0_5": ("punsafe", 0.5),
    "pwatermark_over_0_8": ("pwatermark", 0.8),
}
