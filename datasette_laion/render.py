"""HTML rendering of cells: thumbnails for image URLs, rounded scores.

Nothing from the data reaches the page unescaped, and only http(s) URLs ever
become a link or an image source.
"""
from urllib.parse import urlsplit

from markupsafe import Markup

# Scores shown rounded in HTML (JSON keeps full precision).
ROUNDED_COLUMNS = {"similarity", "punsafe", "pwatermark", "aesthetic"}
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


def safe_image_url(value):
    """``value`` as a URL fit for href/src (http, https or protocol-relative),
    or None. Browsers strip leading and trailing spaces and control characters
    and drop tabs and newlines anywhere; so does urlsplit(), so what it calls
    the scheme is what a browser would act on."""
    if not isinstance(value, str):
        return None
    url = value.strip(_C0_AND_SPACE)
    if not url or any(c in url for c in "\t\r\n"):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return url
    if not parts.scheme and url.startswith("//") and parts.netloc:
        return url
    return None


def _row_value(row, key):
    try:
        return row[key]
    except (KeyError, IndexError):
        return None


def thumbnail(url, caption, punsafe, threshold):
    """A lazy thumbnail linked to the image; hidden behind a click when the
    row's punsafe is at or above ``threshold``, or unknown."""
    safe = safe_image_url(url)
    if safe is None:
        return Markup('<span class="laion-url-text">{}</span>').format(url)
    alt = caption if isinstance(caption, str) else ""
    if isinstance(punsafe, (int, float)) and punsafe < threshold:
        return Markup(
            '<a class="laion-thumb" href="{url}" target="_blank" rel="noopener noreferrer nofollow" '
            'referrerpolicy="no-referrer"><img src="{url}" alt="{alt}" loading="lazy" '
            'referrerpolicy="no-referrer" decoding="async"></a>'
        ).format(url=safe, alt=alt)
    if isinstance(punsafe, (int, float)):
        label = Markup("Possibly unsafe (punsafe {:.2f}): show").format(punsafe)
    else:
        label = Markup("Safety score unknown: show")
    return Markup(
        '<span class="laion-thumb laion-hidden" data-src="{url}" data-alt="{alt}">'
        '<button type="button" class="laion-reveal">{label}</button></span>'
    ).format(url=safe, alt=alt, label=label)


def rounded(value):
    if isinstance(value, bool) or not isinstance(value, float):
        return None
    if value != 0 and abs(value) < 0.001:
        return Markup('<span title="{}">&lt;0.001</span>').format(repr(value))
    return Markup('<span title="{}">{:.3f}</span>').format(repr(value), value)


def render_cell(row, value, column, table, config):
    """The plugin's cell HTML, or None for cells that are not its business."""
    image_columns = config["image_columns"]
    is_image = (table is not None and column in image_columns.get(table, ())) or (
        # canned and arbitrary queries have no table: go by the column name
        table is None and any(column in columns for columns in image_columns.values())
    )
    if is_image and isinstance(value, str):
        return thumbnail(value, _row_value(row, "text"), _row_value(row, "punsafe"), config["safe_mode_threshold"])
    if column in ROUNDED_COLUMNS:
        return rounded(value)
    return None
