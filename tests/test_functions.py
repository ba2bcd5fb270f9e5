from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_laion.functions import domain, fts_phrase
from datasette_laion.partition import DomainIds
from datasette_laion.sample import AWKWARD_URLS


@pytest.mark.parametrize(
    "url,expected",
    [
        ("https://i.pinimg.com/originals/ab/cd.jpg", "i.pinimg.com"),
        ("HTTPS://WWW.UPPER-CASE.COM/IMG.JPG", "www.upper-case.com"),
        ("http://user:password@private.example.org:8080/images/a.jpg", "private.example.org"),
        ("https://example.com:notaport/x.jpg", "example.com"),
        ("//cdn.protocol-relative.com/pic.png", "cdn.protocol-relative.com"),
        ("http://[2001:db8::1]/photo.jpg", "2001:db8::1"),
        ("http://[2001:DB8::2]:8080/p.png", "2001:db8::2"),
        ("https://xn--bcher-kva.example/b.jpg", "xn--bcher-kva.example"),
        ("https://bücher.example/bilder/titel.jpg", "bücher.example"),
        ("https://cdn.shopify.com/s/files/1/poster.jpg?v=1&width=1000", "cdn.shopify.com"),
        ("https://ex.com?x=1", "ex.com"),
        ("https://ex.com#frag", "ex.com"),
        ("https://trailing-dot.example.com./x.jpg", "trailing-dot.example.com."),
        ("  https://leading-space.example.com/x.jpg", "leading-space.example.com"),
        ("https://split\n.example.com/newline.jpg", "split.example.com"),
        ("http://[::1/broken.jpg", None),
        ("not a url at all", None),
        ("", None),
        ("https://", None),
        ("http://user@:80/", None),
        ("javascript:alert(document.domain)//.jpg", None),
        ("data:image/svg+xml,<svg onload=alert(1)>", None),
        (None, None),
        (42, None),
        (b"https://bytes.example/", None),
    ],
)
def test_domain(url, expected):
    assert domain(url) == expected


def _urlsplit_host(url):
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


@pytest.mark.parametrize("url,_", AWKWARD_URLS)
def test_domain_matches_urlsplit_for_awkward_urls(url, _):
    assert domain(url) == _urlsplit_host(url)


def _batch_domains(urls):
    ids = DomainIds()
    found = ids.for_urls(pa.array(urls, pa.string()))
    names = {v: k for k, v in ids.ids.items()}
    return [names.get(int(i)) for i in found]


def test_batch_domains_equal_domain_for_awkward_urls():
    urls = [u for u, _ in AWKWARD_URLS] + [None, "https://a.com/x", "https://A.com/y"]
    assert _batch_domains(urls) == [domain(u) for u in urls]


url_parts = st.lists(
    st.sampled_from(
        ["http", "https", "HTTP", "ftp", "x+y", "1a", ":", "//", "/", "?", "#", "@", "[", "]", "::1",
         "user", "pass", "example.com", "EXAMPLE.org", "80", " ", "\t", "\n", "\x00", "é", "ß", "％",
         "xn--bcher-kva", ".", "-", "%41", "a", "b"]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(url_parts, st.text(max_size=30), st.from_regex(r"\A[a-zA-Z+.:/\-_0-9@\[\]%?# ]{0,40}\Z")))
def test_domain_is_urlsplit_hostname(url):
    """domain()'s shortcut for plain host names gives what urlsplit() gives."""
    assert domain(url) == _urlsplit_host(url)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(url_parts, st.text(max_size=30)), min_size=1, max_size=20))
def test_batch_domains_equal_domain(urls):
    """The build's per-authority shortcut gives exactly domain(url)."""
    assert _batch_domains(urls) == [domain(u) for u in urls]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Thomas Kinkade", '"Thomas Kinkade"'),
        ('Dwayne "The Rock" Johnson', '"Dwayne ""The Rock"" Johnson"'),
        ('"Stone Cold" Steve Austin', '"""Stone Cold"" Steve Austin"'),
        ("Georgia O'Keeffe", '"Georgia O\'Keeffe"'),
        ("", '""'),
        (None, None),
    ],
)
def test_fts_phrase(text, expected):
    assert fts_phrase(text) == expected


@pytest.mark.parametrize(
    "name,caption",
    [
        ('Dwayne "The Rock" Johnson', 'Dwayne "The Rock" Johnson at the premiere'),
        ('"Stone Cold" Steve Austin', 'Stone Cold Steve Austin wrestling poster'),
        ("Georgia O'Keeffe", "Georgia O'Keeffe red canna"),
        ("Spider-Man", "spider man comic"),
        ("Salvador Dalí", "by salvador dali"),
        ("Zdzisław Beksiński", "Zdzisław Beksinski dystopian"),  # ł has no decomposition
        ("J. M. W. Turner", "J.M.W. Turner seascape"),
        ("Gilbert & George", "gilbert george"),
        ("NEAR", "near the sea"),
        ("Ms. Marvel*", "ms marvel"),
    ],
)
def test_fts_phrase_matches_in_fts5(name, caption):
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("create virtual table t using fts5(text)")
    conn.execute("insert into t values (?)", [caption])
    conn.execute("insert into t values ('something else entirely')")
    count = conn.execute("select count(*) from t where t match ?", [fts_phrase(name)]).fetchone()[0]
    assert count == 1


@pytest.mark.parametrize(
    "url,expected",
    [
        ("https://i.pinimg.com/x.jpg", "pinimg.com"),
        ("https://render.fineartamerica.com/images/x.jpg", "fineartamerica.com"),
        ("http://www.bbc.co.uk/news.jpg", "bbc.co.uk"),
        ("http://user:pw@PHOTOS.SMUGMUG.COM:443/x", "smugmug.com"),
        ("http://192.168.1.20/cam.jpg", None),
        ("http://[2001:db8::1]/photo.jpg", None),
        ("https://bücher.example/x.jpg", None),
        ("not a url", None),
        (None, None),
    ],
)
def test_registered_domain(url, expected):
    from datasette_laion.functions import registered_domain

    assert registered_domain(url) == expected


@pytest.mark.parametrize("url", [u for u, _ in AWKWARD_URLS] + ["https://a.example/é\ud800"])
def test_url_hash_is_signed_32_bit(url):
    from datasette_laion.functions import url_hash

    value = url_hash(url)
    assert -(2**31) <= value < 2**31 and value == url_hash(url)
    assert url_hash(None) is None


def test_url_hashes_is_url_hash_of_every_url():
    """The build's bulk form gives the site's per-URL value, NULLs and
    sliced arrays included."""
    import pyarrow as pa

    from datasette_laion.functions import url_hash, url_hashes

    urls = [u for u, _ in AWKWARD_URLS] + [None, "https://a.example/é", ""]
    array = pa.array(urls, pa.string())
    assert url_hashes(array).to_pylist() == [url_hash(u) for u in urls]
    assert url_hashes(array.slice(3, 5)).to_pylist() == [url_hash(u) for u in urls[3:8]]
