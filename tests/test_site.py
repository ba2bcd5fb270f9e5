"""The site: rendering, safe mode, escaping, canned queries, pages."""
import re

import pytest
from markupsafe import Markup

from datasette_laion import config, render, site
from datasette_laion.sample import AWKWARD_CAPTIONS, AWKWARD_URLS

DB = "/laion-aesthetic-6pls"
CONFIG = {**config.DEFAULTS}


@pytest.mark.parametrize(
    "value,expected",
    [
        ("https://i.pinimg.com/x.jpg", "https://i.pinimg.com/x.jpg"),
        ("HTTP://WWW.UPPER-CASE.COM/IMG.JPG", "HTTP://WWW.UPPER-CASE.COM/IMG.JPG"),
        ("//cdn.protocol-relative.com/pic.png", "//cdn.protocol-relative.com/pic.png"),
        ("  https://leading-space.example.com/x.jpg", "https://leading-space.example.com/x.jpg"),
        ("https://cdn.shopify.com/a.jpg?v=1&width=100", "https://cdn.shopify.com/a.jpg?v=1&width=100"),
        ("javascript:alert(1)", None),
        (" javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        ("java\tscript:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("\x01javascript:alert(1)", None),
        ("data:image/svg+xml,<svg onload=alert(1)>", None),
        ("vbscript:msgbox(1)", None),
        ("ftp://files.example.net/pub/image.gif", None),
        ("https://", None),
        ("//", None),
        ("not a url", None),
        ("http://[::1/broken.jpg", None),
        (None, None),
        (42, None),
    ],
)
def test_safe_image_url(value, expected):
    assert render.safe_image_url(value) == expected


def test_thumbnail_escapes_url_and_caption():
    html = render.thumbnail('https://evil.example.com/x.jpg"><script>alert(1)</script>', '"><img src=x onerror=alert(3)>', 0.01, 0.5)
    assert "<script>" not in html and "<img src=x" not in html
    assert "&#34;&gt;&lt;script&gt;" in html and 'alt="&#34;&gt;&lt;img src=x onerror=alert(3)&gt;"' in html
    assert isinstance(html, Markup)


@pytest.mark.parametrize(
    "punsafe,hidden",
    [(0.0, False), (0.49, False), (0.5, True), (0.97, True), (1.0, True), (None, True)],
)
def test_safe_mode_threshold(punsafe, hidden):
    html = render.thumbnail("https://a.example/x.jpg", "cap", punsafe, 0.5)
    assert ("laion-hidden" in html) is hidden
    assert ("<img" in html) is not hidden  # a hidden image is not even requested


@pytest.mark.parametrize("value,shown", [(6.512454509735107, "6.512"), (0.0001234, "&lt;0.001"), (0.0, "0.000"), (1, None), ("x", None)])
def test_rounded(value, shown):
    html = render.rounded(value)
    assert (html is None) if shown is None else (shown in html)


def test_render_cell_dispatch():
    row = {"url": "https://a.example/x.jpg", "text": "cap", "punsafe": 0.1}
    assert "laion-thumb" in render.render_cell(row, row["url"], "url", "images", CONFIG)
    assert "laion-thumb" in render.render_cell(row, row["url"], "url", None, CONFIG)  # query results
    assert render.render_cell(row, row["url"], "url", "domain", CONFIG) is None
    assert render.render_cell(row, "cap", "text", "images", CONFIG) is None


@pytest.mark.asyncio
async def test_table_row_and_query_pages_show_thumbnails(ds, db):
    for path in [f"{DB}/images?_size=5", f"{DB}/images/1", f"{DB}/images_for_name?name=the"]:
        html = (await ds.client.get(path)).text
        assert re.search(r'<a class="laion-thumb" href="https?://[^"]+"[^>]*><img src="https?://', html), path
        assert 'referrerpolicy="no-referrer"' in html and 'loading="lazy"' in html


@pytest.mark.asyncio
async def test_safe_mode_hides_unsafe_rows(ds):
    # (a range of punsafe is browsed best first: guard.py sends it to the search form's browsing)
    html = (await ds.client.get(f"{DB}/images?punsafe__gte=0.5&_size=20", follow_redirects=True)).text
    cells = re.findall(r'<td class="col-url(?: type-[^"]*)?">(.*?)</td>', html, re.S)
    assert len(cells) == 20
    assert all("laion-hidden" in c and "<img" not in c for c in cells)
    html = (await ds.client.get(f"{DB}/images?punsafe__lt=0.5&_size=20", follow_redirects=True)).text
    cells = re.findall(r'<td class="col-url(?: type-[^"]*)?">(.*?)</td>', html, re.S)
    assert all("<img" in c for c in cells)


@pytest.mark.asyncio
async def test_planted_payloads_stay_inert(ds, db):
    payload_rows = set()
    for url, _ in AWKWARD_URLS:
        payload_rows.update(r[0] for r in db.execute("select rowid from images where url = ?", [url]))
    for caption, _ in AWKWARD_CAPTIONS:
        if caption:
            payload_rows.update(r[0] for r in db.execute("select rowid from images where text = ?", [caption]))
    assert len(payload_rows) > 20
    pages = [f"{DB}/images/{rowid}" for rowid in sorted(payload_rows)]
    pages += [f"{DB}/images?_search=script&_size=max", f"{DB}/images?_search=alert&_view=gallery&_size=max",
              f"{DB}/images?_search=javascript&_size=max"]
    for page in pages:
        html = (await ds.client.get(page)).text
        assert "<script>alert" not in html and "<svg onload" not in html, page
        assert "<img src=x" not in html, page
        assert not re.search(r'(href|src)="\s*(javascript|data|vbscript):', html, re.I), page
        assert "onerror=alert" not in html.replace("onerror=alert(3)&gt;", ""), page


@pytest.mark.asyncio
async def test_floats_rounded_in_html_exact_in_json(ds, db):
    value = db.execute("select aesthetic from images where rowid = 1").fetchone()[0]
    html = (await ds.client.get(f"{DB}/images/1")).text
    assert f">{value:.3f}</span>" in html
    assert (await ds.client.get(f"{DB}/images/1.json?_shape=array")).json()[0]["aesthetic"] == value


def _query(db, sql, *params):
    return [tuple(r) for r in db.execute(sql, params)]


@pytest.mark.asyncio
async def test_canned_queries_html_and_json(ds, db):
    db.create_function("fts_phrase", 1, lambda s: '"' + s.replace('"', '""') + '"')
    url = db.execute("select url from images where rowid = 17").fetchone()[0]
    cases = {
        "figures": ("", lambda rows: dict((r["key"], r["value"]) for r in rows)["rows"] == db.execute("select count(*) from images").fetchone()[0]),
        "top_domains": ("", lambda rows: [r["domain"] for r in rows[:3]] == [r[0] for r in db.execute("select domain from domain order by image_counts desc limit 3")]),
        "top_registered_domains": ("", lambda rows: rows[0]["registered_domain"] == "pinimg.com"),
        "artist_counts": ("", lambda rows: len(rows) == db.execute("select count(*) from artists").fetchone()[0]),
        "celebrity_counts": ("", lambda rows: len(rows) == db.execute("select count(*) from celebrities").fetchone()[0]),
        "character_counts": ("", lambda rows: len(rows) == db.execute("select count(*) from characters").fetchone()[0]),
        "images_for_name": ("?name=Thomas+Kinkade", lambda rows: [r["rowid"] for r in rows] == [r[0] for r in db.execute(
            "select rowid from images_fts where images_fts match '\"Thomas Kinkade\"' order by rowid limit 100")] and rows),
        "domain_lookup": ("?domain=i.pinimg.com", lambda rows: rows[0]["domain"] == "i.pinimg.com" and rows[0]["registered_domain"] == "pinimg.com"),
        "images_from_domain": ("?domain=https://i.pinimg.com/anything.jpg", lambda rows: len(rows) == min(100, db.execute("select count(*) from images where domain_id = 1").fetchone()[0])),
        "image_by_url": ("?url=" + __import__("urllib.parse").parse.quote(url), lambda rows: rows[0]["rowid"] == 17),
    }
    for name, (args, check) in cases.items():
        response = await ds.client.get(f"{DB}/{name}.json{args}{'&' if args else '?'}_shape=objects")
        assert response.status_code == 200, (name, response.text)
        assert check(response.json()["rows"]), name
        html = await ds.client.get(f"{DB}/{name}{args}")
        assert html.status_code == 200, name


@pytest.mark.asyncio
async def test_name_counts_link_to_their_search(ds):
    html = (await ds.client.get(f"{DB}/celebrity_counts")).text
    link = re.search(r'<a href="(/laion-aesthetic-6pls/images\?_search=[^"]*Rock[^"]*)">Dwayne &#34;The Rock&#34; Johnson</a>', html)
    assert link, "datasette-json-html link for a name with quotes"
    target = link.group(1).replace("&amp;", "&")
    response = await ds.client.get(target)
    assert response.status_code == 200 and "laion-thumb" in response.text


@pytest.mark.asyncio
async def test_home_robots_health(ds):
    home = (await ds.client.get("/")).text
    assert home.index('name="_search"') < home.index('href="/laion-aesthetic-6pls/domain?_sort_desc=image_counts"')
    for table in ("artists", "celebrities", "characters", "registered_domain"):
        assert f'href="/laion-aesthetic-6pls/{table}?_sort_desc=image_counts"' in home
    robots = (await ds.client.get("/robots.txt")).text
    assert "Disallow: /laion-aesthetic-6pls/images\n" in robots
    health = (await ds.client.get("/-/laion/health")).json()
    assert health == {"ok": True, "database": "laion-aesthetic-6pls", "databases": ["laion-aesthetic-6pls"], "status": "ready"}


@pytest.mark.asyncio
async def test_missing_configured_database_says_not_uploaded(tmp_path):
    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"]["database_path"] = str(tmp_path / "laion" / "laion-aesthetic-6pls.db")
    ds = Datasette(metadata=metadata, settings=site.settings())
    assert (await ds.client.get("/-/laion/health")).json()["status"] == "not uploaded"
    home = await ds.client.get("/")
    assert home.status_code == 200 and "has not been uploaded yet" in home.text


@pytest.mark.asyncio
async def test_configured_database_opened_once_with_inspect_counts(built, tmp_path):
    import json

    from datasette.app import Datasette

    data = json.loads(built.inspect_path.read_text())
    data["laion-aesthetic-6pls"]["tables"]["images"]["count"] = 31337
    inspect = tmp_path / "inspect.json"
    inspect.write_text(json.dumps(data))
    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"].update(database_path=str(built.path), inspect_file=str(inspect))
    ds = Datasette(metadata=metadata, settings=site.settings())
    databases = (await ds.client.get("/-/databases.json")).json()
    assert [(d["name"], d["is_mutable"]) for d in databases] == [("laion-aesthetic-6pls", False)]
    tables = {t["name"]: t["count"] for t in (await ds.client.get(f"{DB}.json")).json()["tables"]}
    assert tables["images"] == 31337


@pytest.mark.parametrize(
    "change,message",
    [
        ({"safe_mode_threshold": 2}, "safe_mode_threshold must be a number from 0 to 1"),
        ({"safe_mode_threshold": "high"}, "safe_mode_threshold must be a number from 0 to 1"),
        ({"image_columns": ["url"]}, "image_columns must map table names"),
        ({"robots_disallow": ["images"]}, "robots_disallow must be a list of paths"),
    ],
)
def test_bad_config_is_refused_at_startup(change, message):
    import asyncio

    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"].update(change)
    ds = Datasette(metadata=metadata)
    with pytest.raises(config.ConfigError, match=message):
        asyncio.run(ds.invoke_startup())
