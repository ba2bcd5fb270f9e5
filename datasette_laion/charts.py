"""Charts as inline SVG, rendered on the server: no JavaScript, no network.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` (what
a screen reader says), axes with tick marks and labels, and one ``<rect>`` per
bar with its own ``<title>`` (the tooltip: bucket, count, share). Every text
from the data goes through ``escape()``; the result is one ``Markup``.
"""
import math

from markupsafe import Markup, escape

WIDTH = 640  # viewBox units; the SVG scales to its container


def number(value):
    """A bucket edge or a figure as people write it: 0.5, 6, 6.1, 128."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def compact(count):
    """Tick labels: 950, 9,500, 95k, 1.5M."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:g}M"
    if count >= 10_000:
        return f"{count / 1_000:g}k"
    return f"{count:,}"


def percent(part, whole):
    if not whole:
        return "0%"
    share = 100 * part / whole
    if 0 < share < 0.01:
        return "<0.01%"
    return f"{share:.2f}%" if share < 10 else f"{share:.1f}%"


def nice_ticks(top, count=5):
    """Round tick values from 0 covering ``top``: (ticks, axis maximum)."""
    if top <= 0:
        return [0, 1], 1
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    step = max(step, 1)
    step = int(step) if float(step).is_integer() else step
    ticks = [0]
    while ticks[-1] < top:
        ticks.append(ticks[-1] + step)
    return ticks, ticks[-1]


def bucket_label(start, end, integer=False):
    """In plain words: "6.1 to 6.2", "60 to 69", "4,096 or more", "under 0"."""
    if start is None:
        return f"under {number(end)}"
    if end is None:
        return f"{number(start)} or more"
    if integer:
        return f"{number(start)} to {number(int(end) - 1)}"
    return f"{number(start)} to {number(end)}"


def _attrs(**attributes):
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(v)}"' for k, v in attributes.items() if v is not None)


def histogram(chart_id, title, x_label, buckets, *, integer=False, markers=(), log=False, total=None, summary=""):
    """A histogram of ``buckets`` [(start, end, count)], bars side by side in
    bucket order (open-ended first/last buckets labelled "under x" / "x+")."""
    height = 300
    left, right, top, bottom = 64, 14, 44, 54
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    base = top + plot_h
    counts = [c for _, _, c in buckets]
    total = total if total is not None else sum(counts)
    biggest = max(counts, default=0)
    if log:
        top_power = max(1, math.ceil(math.log10(max(biggest, 1)) + 1e-9))
        ticks = [10**p for p in range(top_power + 1)]

        def y(value):
            return base - (math.log10(value) / top_power * plot_h if value >= 1 else 0)
    else:
        ticks, axis_max = nice_ticks(biggest)

        def y(value):
            return base - value / axis_max * plot_h

    n = max(len(buckets), 1)
    slot = plot_w / n
    gap = min(2.0, slot * 0.15)
    out = [
        (
            f'<svg class="laion-chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(summary)}</desc>',
        f'<text class="laion-chart-title" x="{left}" y="20">{escape(title)}</text>',
    ]
    # y axis: grid lines, ticks and labels
    for tick in ticks:
        ty = round(y(tick), 1)
        out.append(f'<line class="laion-grid" x1="{left}" x2="{WIDTH - right}" y1="{ty}" y2="{ty}"/>')
        out.append(f'<line class="laion-tick" x1="{left - 5}" x2="{left}" y1="{ty}" y2="{ty}"/>')
        out.append(f'<text class="laion-tick-label" x="{left - 8}" y="{ty + 4}" text-anchor="end">{compact(tick)}</text>')
    y_title = "images (log scale)" if log else "images"
    out.append(
        f'<text class="laion-axis-title" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{y_title}</text>'
    )
    # bars
    for i, (start, end, count) in enumerate(buckets):
        x = left + i * slot + gap / 2
        bar_top = y(count) if count else base
        bar_h = base - bar_top
        if count and bar_h < 1.5:  # every non-empty bucket stays visible
            bar_h, bar_top = 1.5, base - 1.5
        tip = f"{bucket_label(start, end, integer)}: {count:,} images ({percent(count, total)})"
        out.append(
            f'<rect class="laion-bar{" laion-bar-open" if start is None or end is None else ""}" x="{x:.1f}" '
            f'y="{bar_top:.1f}" width="{max(slot - gap, 0.5):.1f}" height="{bar_h:.1f}" data-count="{count}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    # x axis: edges labelled at a round stride (every 1, 2, 5, 10... buckets)
    out.append(f'<line class="laion-axis" x1="{left}" x2="{WIDTH - right}" y1="{base}" y2="{base}"/>')
    out.append(f'<line class="laion-axis" x1="{left}" x2="{left}" y1="{top}" y2="{base}"/>')
    stride = next(s for s in (1, 2, 4, 5, 10, 20, 25, 50, 100) if n / s <= 10)
    steps = [end - start for start, end, _ in buckets if start is not None and end is not None]
    step = steps[0] if steps else None
    for i, (start, end, _) in enumerate(buckets + [(buckets[-1][1], None, 0)] if buckets else []):
        x = left + i * slot
        if i < len(buckets) and (start is None or end is None):
            # an open bucket: label its middle ("under 0", "4,096+")
            text = f"<{number(end)}" if start is None else f"{number(start)}+"
            x += slot / 2
        elif start is None:
            continue  # the right edge of an open last bucket
        elif step and round(start / step) % stride:
            continue
        else:
            text = number(start)
        out.append(f'<line class="laion-tick" x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 5}"/>')
        out.append(f'<text class="laion-tick-label" x="{x:.1f}" y="{base + 18}" text-anchor="middle">{escape(text)}</text>')
    out.append(
        f'<text class="laion-axis-title" x="{left + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    # markers: dashed lines at thresholds, placed within their bucket
    for value, label in markers:
        for i, (start, end, _) in enumerate(buckets):
            if start is not None and end is not None and start <= value < end:
                x = left + (i + (value - start) / (end - start)) * slot
                out.append(f'<line class="laion-marker" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{base}"/>')
                # the label on the side with room for it
                anchor, dx = ("end", -4) if x > left + plot_w * 0.6 else ("start", 4)
                out.append(
                    f'<text class="laion-marker-label" x="{x + dx:.1f}" y="{top - 8}" text-anchor="{anchor}">'
                    f"{escape(label)}</text>"
                )
                break
    out.append("</svg>")
    return Markup("\n".join(out))


def bars(chart_id, title, items, *, total, summary=""):
    """Horizontal bars, biggest first: ``items`` [(label, href, count)]; each
    label links to ``href``; the count and its share of ``total`` follow the bar."""
    row_h, label_w, value_w = 22, 200, 116
    top, bottom = 36, 34
    height = top + row_h * max(len(items), 1) + bottom
    plot_w = WIDTH - label_w - value_w
    x0 = label_w + 6
    biggest = max((c for _, _, c in items), default=0)
    ticks, axis_max = nice_ticks(biggest)
    base = top + row_h * len(items)
    out = [
        (
            f'<svg class="laion-chart laion-bars" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(summary)}</desc>',
        f'<text class="laion-chart-title" x="4" y="20">{escape(title)}</text>',
    ]
    for tick in ticks:
        tx = x0 + tick / axis_max * plot_w
        out.append(f'<line class="laion-grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{base}"/>')
        out.append(f'<line class="laion-tick" x1="{tx:.1f}" x2="{tx:.1f}" y1="{base}" y2="{base + 5}"/>')
        out.append(f'<text class="laion-tick-label" x="{tx:.1f}" y="{base + 18}" text-anchor="middle">{compact(tick)}</text>')
    for i, (label, href, count) in enumerate(items):
        ry = top + i * row_h
        shown = label if len(label) <= 30 else label[:29] + "…"
        text = f'<text class="laion-bar-label" x="{label_w}" y="{ry + 15}" text-anchor="end">{escape(shown)}<title>{escape(label)}</title></text>'
        out.append(f"<a{_attrs(href=href)}>{text}</a>" if href else text)
        width = max(count / axis_max * plot_w, 1.5 if count else 0)
        tip = f"{label}: {count:,} images ({percent(count, total)})"
        out.append(
            f'<rect class="laion-bar" x="{x0}" y="{ry + 3}" width="{width:.1f}" height="{row_h - 6}" data-count="{count}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        out.append(
            f'<text class="laion-bar-value" x="{x0 + width + 5:.1f}" y="{ry + 15}">{count:,} · {percent(count, total)}</text>'
        )
    out.append(f'<line class="laion-axis" x1="{x0}" x2="{x0}" y1="{top}" y2="{base}"/>')
    out.append(f'<line class="laion-axis" x1="{x0}" x2="{x0 + plot_w}" y1="{base}" y2="{base}"/>')
    out.append("</svg>")
    return Markup("\n".join(out))
