"""Small generated pictures for the sample's rows, so that the demo shows
images (`datasette laion sample --images DIR`, and `datasette laion demo`).

* One JPEG per image URL, named by the URL alone (``image_name``: the first
  20 hex digits of its SHA-1, then ``.jpg``), so that the site's route
  (views.sample_image) finds it from the URL in a thumbnail's address.
* About a quarter of the URLs get none (``is_missing``, decided by the same
  hash), as about a quarter of LAION's images no longer load: the page shows
  its "image no longer available" box for those.
* The row's WIDTH/HEIGHT aspect ratio, scaled so the long side is at most
  MAX_SIDE pixels.
* The look follows the caption: the first word of the caption that names a
  topic (TOPIC_WORDS) picks colours and shapes, sea/sky blue horizontal
  bands, forest green vertical strokes, and so on; the URL's hash varies the
  palette, the layout and the number of shapes, so that a gallery looks like a
  gallery and not like identical tiles.

Only URLs that the site would show as images (render.safe_image_url) get a
picture, hashed as the site sees them. Deterministic: the same rows give the
same files (for a given Pillow version). Fast: ~0.35 ms a row on one core.
"""
import hashlib
import random
import re
from pathlib import Path

from .render import safe_image_url

EXTENSION = ".jpg"
CONTENT_TYPE = "image/jpeg"
NAME_PATTERN = re.compile(r"[0-9a-f]{20}\.jpg")  # image_name's names, and nothing else
MAX_SIDE = 320  # twice the 160-pixel thumbnail: sharp on high-density screens
MIN_SIDE = 16
QUALITY = 60  # JPEG; ~4.6 KB an image, flat colours without visible artefacts
MISSING_SHARE = 0.25
BATCH_ROWS = 10_000  # parquet rows read at a time
PROGRESS_ROWS = 1_000  # rows between calls of progress()

# Words that choose a picture's topic: the caption's first such word wins.
TOPIC_WORDS = {
    "sea": "sea ocean beach water lake sky boat waves wave coast island river harbor surf cloud clouds",
    "forest": "forest tree trees wood woods nature garden jungle leaf leaves grass park spring mountain",
    "sunset": "sunset sunrise dusk dawn autumn fire golden gold summer",
    "portrait": "portrait woman man girl boy baby face lady people person wedding dress fashion family kids bride",
    "city": "city building buildings house street architecture room interior kitchen bedroom home window "
            "living tower bridge",
    "flower": "flower flowers floral rose roses bouquet tulip blossom",
    "night": "night dark moon star stars winter christmas space",
}
TOPIC_OF_WORD = {word: topic for topic, words in TOPIC_WORDS.items() for word in words.split()}
WORD = re.compile(r"[a-z]+")


def _digest(url):
    return hashlib.sha1(url.encode("utf-8", "surrogatepass")).digest()


def image_name(url):
    """The file name of ``url``'s picture."""
    return _digest(url).hex()[:20] + EXTENSION


def is_missing(url):
    """Whether ``url`` gets no picture (MISSING_SHARE of URLs, by their hash)."""
    return _digest(url)[12] < 256 * MISSING_SHARE


def topic(caption):
    """The caption's topic: TOPIC_WORDS' key for its first topic word, else "art"."""
    if isinstance(caption, str):
        for word in WORD.findall(caption.lower()):
            found = TOPIC_OF_WORD.get(word)
            if found:
                return found
    return "art"


def image_size(width, height):
    """(width, height) in pixels: the row's aspect ratio, long side at most
    MAX_SIDE; 4:3 when the row's size is unknown."""
    try:
        width, height = float(width), float(height)
    except (TypeError, ValueError):
        width = height = 0
    if not (width > 0 and height > 0 and width < 1e6 and height < 1e6):  # NaN too
        width, height = 640, 480
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


# Drawing. Each function paints one topic onto an ImageDraw of size (w, h),
# with rnd (random.Random seeded by the URL) choosing the variation.

def _vary(color, rnd, amount=22):
    return tuple(min(255, max(0, c + rnd.randint(-amount, amount))) for c in color)


def _mix(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _bands(draw, w, top, bottom, color_top, color_bottom, steps=10):
    """A vertical gradient from ``top`` to ``bottom`` as horizontal bands."""
    span = max(1, bottom - top)
    for i in range(steps):
        y0 = top + span * i // steps
        y1 = top + span * (i + 1) // steps
        draw.rectangle([0, y0, w, y1], fill=_mix(color_top, color_bottom, i / max(1, steps - 1)))


def _sea(draw, w, h, rnd):
    horizon = int(h * rnd.uniform(0.3, 0.6))
    _bands(draw, w, 0, horizon, _vary((95, 150, 215), rnd), _vary((190, 220, 245), rnd), 8)
    _bands(draw, w, horizon, h, _vary((40, 120, 180), rnd), _vary((10, 45, 100), rnd), 8)
    for _ in range(rnd.randint(4, 12)):  # waves
        y = rnd.randint(horizon, h)
        x = rnd.randint(-w // 4, w)
        draw.rectangle([x, y, x + rnd.randint(w // 8, w // 2), y + max(1, h // 120)], fill=_vary((160, 200, 230), rnd))
    if rnd.random() < 0.4:  # a beach
        draw.polygon([(0, h), (0, h - rnd.randint(h // 10, h // 4)), (w, h - rnd.randint(0, h // 8)), (w, h)],
                     fill=_vary((222, 200, 160), rnd))
    if rnd.random() < 0.35:  # a boat's sail
        x, y = rnd.randint(w // 8, w * 7 // 8), horizon + rnd.randint(0, max(1, h // 10))
        s = max(4, h // 10)
        draw.polygon([(x, y - s), (x, y), (x + s * 2 // 3, y)], fill=(245, 245, 240))


def _forest(draw, w, h, rnd):
    ground = int(h * rnd.uniform(0.6, 0.85))
    _bands(draw, w, 0, ground, _vary((170, 210, 190), rnd), _vary((90, 150, 90), rnd), 6)
    draw.rectangle([0, ground, w, h], fill=_vary((50, 95, 40), rnd))
    for _ in range(rnd.randint(10, 24)):  # trunks and their crowns
        x = rnd.randint(0, w)
        trunk = max(2, int(w * rnd.uniform(0.01, 0.04)))
        top = int(h * rnd.uniform(0.05, 0.5))
        draw.rectangle([x, top, x + trunk, h], fill=_vary((70, 55, 35), rnd, 15))
        r = int(w * rnd.uniform(0.05, 0.12))
        draw.ellipse([x - r, top - r, x + trunk + r, top + r * 2], fill=_vary((40, 120, 50), rnd, 30))


def _sunset(draw, w, h, rnd):
    horizon = int(h * rnd.uniform(0.55, 0.8))
    _bands(draw, w, 0, horizon, _vary((120, 50, 110), rnd), _vary((250, 160, 60), rnd), 10)
    r = int(min(w, h) * rnd.uniform(0.08, 0.18))
    cx = rnd.randint(w // 5, w * 4 // 5)
    draw.ellipse([cx - r, horizon - r * 3 // 2, cx + r, horizon + r // 2], fill=_vary((255, 220, 120), rnd, 10))
    points = [(0, h), (0, horizon)]
    for i in range(1, 6):  # hills in silhouette
        points.append((w * i // 5, horizon - rnd.randint(0, h // 8)))
    points.append((w, h))
    draw.polygon(points, fill=_vary((60, 25, 45), rnd, 15))


def _portrait(draw, w, h, rnd):
    background = rnd.choice([(205, 195, 180), (150, 160, 170), (90, 130, 135), (200, 160, 165), (60, 60, 70)])
    _bands(draw, w, 0, h, _vary(background, rnd), _vary(_mix(background, (0, 0, 0), 0.3), rnd), 6)
    cx = w // 2 + rnd.randint(-w // 10, w // 10)
    face_w, face_h = int(min(w, h) * 0.22), int(min(w, h) * 0.3)
    cy = int(h * rnd.uniform(0.35, 0.45))
    draw.ellipse([cx - face_w * 3, cy + face_h, cx + face_w * 3, h + face_h * 2],
                 fill=_vary(rnd.choice([(40, 50, 90), (120, 30, 40), (30, 30, 30), (200, 200, 190), (70, 100, 60)]), rnd))
    skin = _vary(rnd.choice([(240, 205, 180), (200, 150, 115), (140, 95, 65), (95, 65, 45)]), rnd, 10)
    draw.rectangle([cx - face_w // 3, cy + face_h // 2, cx + face_w // 3, cy + face_h * 3 // 2], fill=skin)
    hair = _vary(rnd.choice([(40, 30, 20), (90, 60, 30), (200, 170, 100), (20, 20, 20), (130, 60, 30)]), rnd, 10)
    draw.ellipse([cx - face_w * 6 // 5, cy - face_h * 6 // 5, cx + face_w * 6 // 5, cy + face_h * rnd.randint(3, 12) // 10],
                 fill=hair)
    draw.ellipse([cx - face_w, cy - face_h, cx + face_w, cy + face_h], fill=skin)


def _city(draw, w, h, rnd):
    _bands(draw, w, 0, h, _vary((120, 160, 205), rnd), _vary((215, 210, 200), rnd), 6)
    x = -rnd.randint(0, w // 10)
    while x < w:
        bw = int(w * rnd.uniform(0.08, 0.2))
        top = int(h * rnd.uniform(0.15, 0.65))
        color = _vary(rnd.choice([(90, 95, 110), (130, 125, 120), (160, 110, 85), (60, 70, 85), (190, 185, 175)]), rnd, 15)
        draw.rectangle([x, top, x + bw, h], fill=color)
        step = max(4, bw // 4)
        lit = _vary((250, 225, 150), rnd, 10)
        for wy in range(top + step // 2, h - step, step * 2):  # a column of windows
            draw.rectangle([x + step // 2, wy, x + step, wy + step // 2], fill=lit)
        x += bw + rnd.randint(0, w // 30)


def _flower(draw, w, h, rnd):
    _bands(draw, w, 0, h, _vary((120, 170, 90), rnd), _vary((40, 90, 40), rnd), 6)
    petals = _vary(rnd.choice([(230, 90, 130), (210, 40, 60), (250, 210, 70), (170, 110, 210), (250, 245, 240)]), rnd, 15)
    for _ in range(rnd.randint(2, 7)):
        cx, cy = rnd.randint(0, w), rnd.randint(0, h)
        r = int(min(w, h) * rnd.uniform(0.06, 0.16))
        for dx, dy in ((0, -1), (1, 0), (0, 1), (-1, 0), (1, 1), (-1, -1)):
            px, py = cx + dx * r * 4 // 5, cy + dy * r * 4 // 5
            draw.ellipse([px - r * 3 // 5, py - r * 3 // 5, px + r * 3 // 5, py + r * 3 // 5], fill=petals)
        draw.ellipse([cx - r // 3, cy - r // 3, cx + r // 3, cy + r // 3], fill=_vary((240, 190, 50), rnd, 15))


def _night(draw, w, h, rnd):
    _bands(draw, w, 0, h, _vary((10, 15, 40), rnd, 10), _vary((35, 45, 90), rnd, 15), 8)
    for _ in range(rnd.randint(25, 70)):
        x, y, s = rnd.randint(0, w), rnd.randint(0, h * 2 // 3), rnd.randint(0, 1)
        draw.rectangle([x, y, x + s, y + s], fill=(250, 250, 230))
    r = int(min(w, h) * rnd.uniform(0.06, 0.12))
    cx, cy = rnd.randint(r, w - r), rnd.randint(r, h // 2)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(245, 240, 210))
    draw.polygon([(0, h), (0, h * 4 // 5), (w // 3, h * 3 // 4), (w * 2 // 3, h * 5 // 6), (w, h * 3 // 4), (w, h)],
                 fill=(15, 15, 25))


ART_PALETTES = [
    [(38, 70, 83), (42, 157, 143), (233, 196, 106), (244, 162, 97), (231, 111, 81)],
    [(240, 234, 214), (200, 60, 50), (30, 30, 30), (220, 180, 60), (60, 90, 150)],
    [(250, 240, 245), (230, 150, 180), (150, 110, 200), (90, 180, 200), (240, 200, 120)],
    [(30, 25, 40), (180, 60, 90), (240, 140, 60), (250, 220, 150), (90, 140, 120)],
    [(225, 220, 210), (120, 110, 100), (170, 140, 110), (80, 80, 90), (200, 170, 140)],
]


def _art(draw, w, h, rnd):
    palette = rnd.choice(ART_PALETTES)
    draw.rectangle([0, 0, w, h], fill=_vary(palette[0], rnd, 10))
    for _ in range(rnd.randint(5, 12)):
        color = _vary(rnd.choice(palette[1:]), rnd, 15)
        x0, y0 = rnd.randint(-w // 4, w), rnd.randint(-h // 4, h)
        x1, y1 = x0 + rnd.randint(w // 10, w // 2), y0 + rnd.randint(h // 10, h // 2)
        shape = rnd.random()
        if shape < 0.4:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        elif shape < 0.75:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=color)


PAINTERS = {"sea": _sea, "forest": _forest, "sunset": _sunset, "portrait": _portrait, "city": _city,
            "flower": _flower, "night": _night, "art": _art}


def picture(url, caption, width, height):
    """The PIL image for a row."""
    from PIL import Image, ImageDraw

    size = image_size(width, height)
    image = Image.new("RGB", size)
    rnd = random.Random(int.from_bytes(_digest(url)[:8], "big"))
    PAINTERS[topic(caption)](ImageDraw.Draw(image), size[0], size[1], rnd)
    return image


def write_images(rows, directory, progress=None):
    """Write the picture of each row, (url, caption, width, height), to
    ``directory``: none for URLs that are not images or are "missing".
    ``progress(n)`` is called every PROGRESS_ROWS rows (and for the rest at
    the end). Returns (images written, rows without one)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = skipped = pending = 0
    for url, caption, width, height in rows:
        safe = safe_image_url(url)
        if safe is None or is_missing(safe):
            skipped += 1
        else:
            picture(safe, caption, width, height).save(directory / image_name(safe), "JPEG", quality=QUALITY)
            written += 1
        pending += 1
        if pending == PROGRESS_ROWS:
            if progress:
                progress(pending)
            pending = 0
    if progress and pending:
        progress(pending)
    return written, skipped


def parquet_rows(paths):
    """(url, caption, width, height) of every row of parquet files of any
    source profile (sizes None where it has none), streamed in batches."""
    import pyarrow.parquet as pq

    from .source import open_source

    for path in paths:
        names = [open_source(path).columns.get(c) for c in ("url", "text", "width", "height")]
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=[n for n in names if n]):
            yield from zip(*(batch.column(n).to_pylist() if n else [None] * batch.num_rows for n in names))


def count_rows(paths):
    """Rows in all of ``paths`` (from their footers), for a progress bar."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
