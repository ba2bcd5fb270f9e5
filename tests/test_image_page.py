"""The page of one image (image_page.py): every part of it, safe mode, the
row JSON left as Datasette's, and the pieces it is computed from."""
import re
from html.parser import HTMLParser

import pytest
from markupsafe import escape
from plain_datasette import plain_site, plugin_unloaded

from datasette_laion import image_page, site

DB = "laion-aesthetic-6pls"


def a_row(db, where, params=()):
    return db.execute(f"select rowid, * from images where {where} order by rowid limit 1", params).fetchone()


@pytest.mark.asyncio
async def test_every_part_of_the_page(ds, db):
    # a safe image from the biggest host whose caption names a curated artist
    rowid, url, text = db.execute(
        "select i.rowid, i.url, i.text from images_fts f join images i on i.rowid = f.rowid"
        " where images_fts match '\"Thomas Kinkade\"' and i.punsafe < 0.5 and i.domain_id is not null"
        " order by i.domain_id, i.rowid limit 1").fetchone()
    domain_id, = db.execute("select domain_id from images where rowid = ?", [rowid]).fetchone()
    host, host_images, registered = db.execute(
        "select d.domain, d.image_counts, r.registered_domain from domain d"
        " left join registered_domain r on r.id = d.registered_domain_id where d.id = ?", [domain_id]).fetchone()
    total = int(db.execute("select value from build_info where key = 'rows'").fetchone()[0])
    page = (await ds.client.get(f"/{DB}/images/{rowid}")).text
    section = page.split('<section class="laion-image">', 1)[1].split("</section>", 1)[0]
    assert '<img src="' in section and 'class="laion-thumb"' in section  # the image, large, linked to itself
    assert f'href="{url}"' in section.replace("&amp;", "&")
    assert f'<p class="laion-caption-full">{escape(text)}</p>' in section  # the caption in full
    for score in ("aesthetic", "similarity", "punsafe", "pwatermark"):
        assert f"<dt>{score}</dt>" in section
    share = rowid / total * 100
    assert (f"top {share:.2g}%" if share < 1 else f"top {share:.0f}%") in section  # its rank: rows are stored best first
    assert "higher than" in section and "% of the images" in section  # from the build's histograms
    assert "Score of the LAION aesthetic predictor" in section  # the meaning, from metadata.yml
    assert " × " in section and "pixels" in section
    assert f'<a href="/{DB}/domain/{domain_id}">{host}</a> ({host_images:,} images)' in section
    assert f"/{DB}/images?_domain={host}&amp;_view=gallery" in section
    if registered:
        assert f">{registered}</a>" in section
    assert f'href="/{DB}/images?_search=%22Thomas+Kinkade%22">Thomas Kinkade</a>' in section
    assert f'href="/{DB}/images/{rowid}.json"' in section and f'href="/{DB}/image_by_url?url=' in section
    more = page.split('<ul class="laion-gallery">', 1)[1].split("</ul>", 1)[0]
    expected = [r[0] for r in db.execute(
        "select rowid from images where domain_id = ? and rowid != ? order by rowid limit 12", [domain_id, rowid])]
    assert re.findall(rf'href="/{DB}/images/(\d+)"', more) == [str(r) for r in expected]
    assert "The row" in page and '<table class="rows-and-columns">' in page  # Datasette's row page follows


@pytest.mark.asyncio
async def test_safe_mode_applies_to_the_large_image(ds, db):
    rowid = a_row(db, "punsafe >= 0.5 and domain_id is not null")[0]
    page = (await ds.client.get(f"/{DB}/images/{rowid}")).text
    large = page.split('<div class="laion-image-large">', 1)[1].split("</div>", 1)[0]
    assert "laion-hidden" in large and "<img" not in large and "Possibly unsafe" in large
    more = page.split('<ul class="laion-gallery">', 1)[1].split("</ul>", 1)[0] if "laion-gallery" in page else ""
    for item in re.findall(r"<li>.*?</li>", more, re.S):
        assert ("laion-hidden" in item) != ("<img" in item)


@pytest.mark.asyncio
async def test_row_json_is_datasettes(built, db):
    rowid = a_row(db, "domain_id is not null")[0]
    with plugin_unloaded():
        plain = plain_site(built)
        theirs = (await plain.client.get(f"/{DB}/images/{rowid}.json?_shape=objects")).json()
    ours = site.make_datasette(built.path, built.inspect_path)
    mine = (await ours.client.get(f"/{DB}/images/{rowid}.json?_shape=objects")).json()
    theirs.pop("query_ms", None), mine.pop("query_ms", None)
    assert mine == theirs


class Tags(HTMLParser):
    """The elements, attribute names and text of a piece of HTML."""

    def __init__(self):
        super().__init__()
        self.names, self.attributes, self.text = [], [], ""

    def handle_starttag(self, tag, attrs):
        self.names.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text += data


@pytest.mark.asyncio
async def test_payload_captions_are_text_on_the_page(ds, db):
    rows = db.execute("select rowid, text from images where text like '%<script%' or text like '%onerror%' limit 5").fetchall()
    assert rows
    for rowid, text in rows:
        page = (await ds.client.get(f"/{DB}/images/{rowid}")).text
        section = page.split('<section class="laion-image">', 1)[1].split("</section>", 1)[0]
        tags = Tags()
        tags.feed(section)
        assert "script" not in tags.names and "iframe" not in tags.names
        assert not [a for a in tags.attributes if a.startswith("on")]
        assert text in tags.text  # shown as text


@pytest.mark.asyncio
async def test_other_tables_rows_are_datasettes(ds):
    page = (await ds.client.get(f"/{DB}/domain/1")).text
    assert "laion-image" not in page and "<table" in page


def test_names_found_as_whole_phrases():
    names = image_page.Names([("artists", "Claude Monet", 5), ("celebrities", "Beyoncé", 9), ("artists", "Monet", 2)])
    found = {name for _, name, _ in names.found_in("A BEYONCE poster after claude-monet, not Monetary")}
    assert found == {"Beyoncé", "Claude Monet", "Monet"}
    assert names.found_in("monetary") == [] and names.found_in(None) == []


def test_share_below_interpolates_in_its_bucket():
    buckets = [(0.0, 0.5, 50), (0.5, 1.0, 50)]
    assert image_page.share_below(buckets, 0.25) == 0.25
    assert image_page.share_below(buckets, 0.75) == 0.75
    assert image_page.share_below(buckets, 2) == 1.0
    assert image_page.share_below([], 0.3) is None
    open_ended = [(None, 0.0, 10), (0.0, 1.0, 80), (1.0, None, 10)]  # under- and overflow buckets
    assert image_page.share_below(open_ended, 0.5) == 0.5
    assert image_page.share_below(open_ended, -3) == 0.05 and image_page.share_below(open_ended, 7) == 0.95


@pytest.mark.asyncio
async def test_the_page_shows_what_the_source_has(tmp_path):
    """PD12M has no scores but a licence and a source: the page shows those
    (its profile's image_page_columns) and no empty score."""
    from datasette_laion import build, sample

    sample.generate(tmp_path / "parquet", rows=600, files=1, seed=5, profile="pd12m")
    result = build.build(tmp_path / site.DATABASE_FILE, [tmp_path / "parquet"], progress=False, workers=1)
    ds = site.make_datasette(result.path, result.inspect_path)
    page = (await ds.client.get(f"/{DB}/images/1")).text
    section = page.split('<section class="laion-image">', 1)[1].split("</section>", 1)[0]
    assert "<dt>license</dt>" in section and "<dt>source</dt>" in section
    for score in ("aesthetic", "punsafe", "pwatermark", "similarity"):
        assert f"<dt>{score}</dt>" not in section


@pytest.mark.asyncio
async def test_safe_mode_has_nothing_to_go_on_without_punsafe(tmp_path):
    """PD12M has no punsafe: thumbnails are shown (not all hidden as
    "unknown"), and the pages say that safe mode has nothing to go on."""
    from datasette_laion import build, sample

    sample.generate(tmp_path / "parquet", rows=600, files=1, seed=5, profile="pd12m")
    result = build.build(tmp_path / site.DATABASE_FILE, [tmp_path / "parquet"], progress=False, workers=1)
    ds = site.make_datasette(result.path, result.inspect_path)
    for path in (f"/{DB}/images?_search=dog", f"/{DB}/images?_search=dog&_view=gallery", f"/{DB}/images",
                 f"/{DB}/images/1"):
        page = (await ds.client.get(path)).text
        assert "laion-hidden" not in page and 'class="laion-thumb"' in page, path
        assert "window.LAION_SAFE_MODE_NOTHING = true;" in page, path
    mywork = (await ds.client.get("/-/laion/mywork?q=dog")).text
    assert "Safe mode has nothing to go on" in mywork


@pytest.mark.asyncio
async def test_safe_mode_still_hides_with_punsafe(ds, db):
    rowid = a_row(db, "punsafe >= 0.5")[0]
    page = (await ds.client.get(f"/{DB}/images/{rowid}")).text
    assert "laion-hidden" in page and "LAION_SAFE_MODE_NOTHING" not in page
