"""Plain-Python SQL functions, shared by the build and the plugin.

Each function here is registered on every Datasette connection by the
``prepare_connection`` hook, and the build uses the very same code, so the
domains stored in the database are exactly what ``select domain(url)`` says.
"""
import functools
import re
import zlib
from urllib.parse import quote_plus, urlsplit

# The part of a URL that decides its host under urlsplit(): after an optional
# scheme, "//" and the authority, ending where urlsplit() ends it (at "/", "?",
# "#" or the end). The captured "//authority" has the same host as the URL.
# URLs whose authority holds whitespace or control characters (which urlsplit()
# strips or removes) do not match and take the slow path, so for every URL that
# matches, domain(url) == domain(match). The build uses this to compute each
# distinct authority once, not once per row; tests check the equivalence over
# the awkward URLs of the sample generator and random ones.
AUTHORITY_PREFIX_RE2 = r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:)?(?P<prefix>//[^/?#\x00-\x20]*)(?:[/?#]|$)"


# URLs whose authority is a plain host name (ASCII letters, digits, ".", "-",
# "_"; no user, port, brackets, "%" or whitespace) right after an optional
# scheme: urlsplit() would give that host, lower-cased. Most URLs take this
# shortcut; tests check it against urlsplit() on random URLs.
_PLAIN_HOST = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//([A-Za-z0-9._\-]+)(?:[/?#]|\Z)")


def domain(url):
    """The lower-cased host of a URL, as ``urlsplit(url).hostname`` gives it.

    No scheme, no ``user:password@``, no ``:port``. None (SQL NULL), never an
    empty string, when the URL is not a string, has no host or cannot be parsed.
    """
    if not isinstance(url, str):
        return None
    plain = _PLAIN_HOST.match(url)
    if plain:
        return plain.group(1).lower()
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


_extractor = None


@functools.lru_cache(maxsize=200_000)
def registrable_domain(host):
    """The registrable domain of a host by the Public Suffix List (the
    snapshot bundled with tldextract; never downloaded): ``pinimg.com`` for
    ``i.pinimg.com``, ``bbc.co.uk`` for ``www.bbc.co.uk``. None for IP
    addresses, hosts under no known suffix, and non-strings."""
    global _extractor
    if not isinstance(host, str) or not host:
        return None
    if _extractor is None:
        import tldextract

        _extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    result = _extractor(host)
    found = getattr(result, "top_domain_under_public_suffix", None)
    if found is None:  # tldextract < 5.3
        found = result.registered_domain
    return found or None


def registered_domain(url):
    """``registrable_domain(domain(url))``: ``pinimg.com`` for
    ``https://i.pinimg.com/x.jpg``."""
    host = domain(url)
    return registrable_domain(host) if host else None


def url_hash(url):
    """CRC-32 of a URL's UTF-8 bytes, as a signed 32-bit integer: the key of
    the images_url_hash index, for exact URL look-ups
    (``where url_hash = url_hash(:url) and url = :url``)."""
    if not isinstance(url, str):
        return None
    value = zlib.crc32(url.encode("utf-8", "surrogatepass"))
    return value - (1 << 32) if value >= (1 << 31) else value


def url_hashes(urls):
    """``url_hash()`` of every URL of an Arrow string array, as an Arrow
    int64 array (NULL for NULL): the build's bulk form of the same value."""
    import numpy as np
    import pyarrow as pa

    crc32 = zlib.crc32
    values = urls.fill_null("").to_pylist() if urls.null_count else urls.to_pylist()
    unsigned = np.fromiter(
        (crc32(url.encode("utf-8", "surrogatepass")) for url in values), dtype=np.uint32, count=len(values)
    )
    mask = urls.is_null().to_numpy(zero_copy_only=False) if urls.null_count else None
    return pa.array(unsigned.view(np.int32).astype(np.int64), mask=mask)



def phrase_search_url(images_url):
    """A function of a name giving the URL path of its phrase search on the
    images table (``images_url()`` gives its path): the double quotes of a
    name become spaces, which the tokenizer treats alike, so that the phrase
    stays one phrase."""

    def search_url(text):
        if text is None:
            return None
        return images_url() + "?_search=" + quote_plus('"' + str(text).replace('"', " ") + '"')

    return search_url
