"""HTML rendering of cells: thumbnails for image URLs, rounded scores.

Nothing from the data reaches the page unescaped, and only http(s) URLs ever
become a link or an image source (an image's thumbnail through the
thumbnail_url template, when one is configured).
"""
from urllib.parse import quote, urlsplit

from markupsafe import Markup, escape

from .compat import to_css_class

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


def thumbnail_src(url, template):
    """Where the thumbnail of the image at ``url`` (already checked by
    safe_image_url) loads from: the thumbnail_url ``template`` filled in
    (config.py checked it), or the URL itself."""
    if template is None:
        return url
    return template.format(url=url, url_encoded=quote(url, safe=""))


def thumbnail(url, caption, punsafe, threshold, thumbnail_url=None):
    """A lazy thumbnail linked to the image; hidden behind a click when the
    row's punsafe is at or above ``threshold``, or unknown. ``threshold``
    None: safe mode has nothing to go on (the dataset has no punsafe), every
    thumbnail is shown. The <img> loads from the ``thumbnail_url`` template
    (config.py) when there is one."""
    # escape() on every value from the data; Markup() once on the result.
    safe = safe_image_url(url)
    if safe is None:
        return Markup(f'<span class="laion-url-text">{escape(url)}</span>')
    href = escape(safe)
    src = escape(thumbnail_src(safe, thumbnail_url))
    alt = escape(caption) if isinstance(caption, str) else ""
    if threshold is None or (isinstance(punsafe, (int, float)) and punsafe < threshold):
        return Markup(
            f'<a class="laion-thumb" href="{href}" target="_blank" rel="noopener noreferrer nofollow" '
            f'referrerpolicy="no-referrer"><img src="{src}" alt="{alt}" loading="lazy" '
            f'referrerpolicy="no-referrer" decoding="async"></a>'
        )
    if isinstance(punsafe, (int, float)):
        label = f"Possibly unsafe (punsafe {punsafe:.2f}): show"
    else:
        label = "Safety score unknown: show"
    return Markup(
        f'<span class="laion-thumb laion-hidden" data-src="{src}" data-href="{href}" data-alt="{alt}">'
        f'<button type="button" class="laion-reveal">{label}</button></span>'
    )


def rounded_html(value):
    """A float as HTML (str), rounded, with its full value as the title."""
    if value != 0 and abs(value) < 0.001:
        return f'<span title="{value!r}">&lt;0.001</span>'
    return f'<span title="{value!r}">{value:.3f}</span>'


def rounded(value):
    if isinstance(value, bool) or not isinstance(value, float):
        return None
    return Markup(rounded_html(value))


SAFE_MODE_SETTING = object()  # render_cell: the configured safe_mode_threshold

# The curated names' tables: each name links to its phrase search.
NAME_TABLES = ("artists", "celebrities", "characters")


def render_cell(row, value, column, table, config, name_search=None, threshold=SAFE_MODE_SETTING):
    """The plugin's cell HTML, or None for cells that are not its business.
    ``name_search``: a name's search URL (functions.phrase_search_url);
    ``threshold``: safe mode's, when not the configured one (None: off)."""
    if threshold is SAFE_MODE_SETTING:
        threshold = config["safe_mode_threshold"]
    if table in NAME_TABLES and column == "name" and isinstance(value, str) and name_search is not None:
        return Markup(f'<a href="{escape(name_search(value))}" title="Images whose caption names {escape(value)}">'
                      f"{escape(value)}</a>")
    image_columns = config["image_columns"]
    is_image = (table is not None and column in image_columns.get(table, ())) or (
        # canned and arbitrary queries have no table: go by the column name
        table is None and any(column in columns for columns in image_columns.values())
    )
    if is_image and isinstance(value, str):
        return thumbnail(value, _row_value(row, "text"), _row_value(row, "punsafe"), threshold,
                         config["thumbnail_url"])
    if column in ROUNDED_COLUMNS:
        return rounded(value)
    return None


def table_rows(display_rows):
    """The ``<tr>`` rows of Datasette's ``_table.html`` for its display_rows
    (each an iterable of cells: dicts with column, value_type and value), as
    its Jinja loop writes them: Markup values as they are, anything else
    escaped."""
    return Markup("".join(
        "<tr>"
        + "".join(
            f'<td class="col-{escape(to_css_class(cell["column"]))} type-{escape(cell["value_type"])}">'
            f'{escape(cell["value"])}</td>'
            for cell in row
        )
        + "</tr>\n"
        for row in display_rows
    ))
