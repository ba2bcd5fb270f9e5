"""Plain-Python SQL functions, shared by the build and the plugin.

Each function here is registered on every Datasette connection by the
``prepare_connection`` hook, and the build uses the very same code, so the
domains stored in the database are exactly what ``select domain(url)`` says.
"""
from urllib.parse import urlsplit

# The part of a URL that decides its host under urlsplit(): after an optional
# scheme, "//" and the authority, ending where urlsplit() ends it (at "/", "?",
# "#" or the end). The captured "//authority" has the same host as the URL.
# URLs whose authority holds whitespace or control characters (which urlsplit()
# strips or removes) do not match and take the slow path, so for every URL that
# matches, domain(url) == domain(match). The build uses this to compute each
# distinct authority once, not once per row; tests check the equivalence over
# the awkward URLs of the sample generator and random ones.
AUTHORITY_PREFIX_RE2 = r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:)?(?P<prefix>//[^/?#\x00-\x20]*)(?:[/?#]|$)"


def domain(url):
    """The lower-cased host of a URL, as ``urlsplit(url).hostname`` gives it.

    No scheme, no ``user:password@``, no ``:port``. None (SQL NULL), never an
    empty string, when the URL is not a string, has no host or cannot be parsed.
    """
    if not isinstance(url, str):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        # e.g. "http://[::1/x" (unbalanced IPv6 brackets) or a netloc that
        # NFKC-normalizes into URL syntax.
        return None
    return host or None


def fts_phrase(text):
    """Quote a string as one FTS5 phrase: ``Dwayne "The Rock" Johnson`` becomes
    ``"Dwayne ""The Rock"" Johnson"``.

    FTS5 strings are delimited by double quotes, with an embedded double quote
    written twice. Everything else (apostrophes, hyphens, ``*``, ``:``, ``^``,
    keywords such as NEAR or OR) is literal inside the quotes, and the tokenizer
    then splits the phrase exactly as it split the captions.
    """
    if text is None:
        return None
    return '"' + str(text).replace('"', '""') + '"'
