"""Generated pictures for the sample (sample_images.py), the route that
serves them (views.sample_image) and `sample --images` / the demo."""
import io
import json
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from PIL import Image, ImageStat

from datasette_laion import cli, sample_images, site


def _rows(n, caption="a photo", width=1200, height=800):
    return [(f"https://img{i % 97}.example.com/wp-content/uploads/{i}.jpg", caption, width, height) for i in range(n)]


def test_names_come_from_the_url_alone():
    url = "https://i.pinimg.com/originals/ab/cd/x.jpg"
    name = sample_images.image_name(url)
    assert sample_images.NAME_PATTERN.fullmatch(name) and name == sample_images.image_name(url)
    assert name != sample_images.image_name(url + "?v=2")


def test_about_a_quarter_of_the_urls_have_no_picture(tmp_path):
    rows = _rows(4000)
    written, without = sample_images.write_images(rows, tmp_path)
    assert written + without == 4000
    assert 0.22 < without / 4000 < 0.28
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {sample_images.image_name(url) for url, *_ in rows if not sample_images.is_missing(url)}


def test_deterministic(tmp_path):
    rows = _rows(60, "sunset over the sea")
    sample_images.write_images(rows, tmp_path / "a")
    sample_images.write_images(rows, tmp_path / "b")
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} and len(a) > 30


def test_urls_that_are_not_images_get_none(tmp_path):
    rows = [("javascript:alert(1)//.jpg", "x", 10, 10), ("not a url", "x", 10, 10), (None, "x", 10, 10),
            ("ftp://files.example.net/a.gif", "x", 10, 10)]
    assert sample_images.write_images(rows, tmp_path) == (0, 4)
    assert list(tmp_path.iterdir()) == []


def test_hashed_as_the_site_sees_the_url(tmp_path):
    # render.thumbnail strips leading spaces before filling in thumbnail_url
    url = next(u for u, *_ in _rows(50) if not sample_images.is_missing(u))
    sample_images.write_images([("  " + url, "x", 640, 480)], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [sample_images.image_name(url)]


@pytest.mark.parametrize(
    "width,height,size",
    [
        (3000, 2000, (320, 213)),  # 3:2, long side scaled to MAX_SIDE
        (1080, 1920, (180, 320)),  # 9:16
        (1000, 1000, (320, 320)),
        (200, 150, (200, 150)),  # small images stay as they are
        (4000, 64, (320, 16)),  # very wide: the short side stays visible
        (None, None, (320, 240)),  # unknown: 4:3
        (float("nan"), 500, (320, 240)),
        (0, 500, (320, 240)),
    ],
)
def test_sizes_keep_the_rows_aspect_ratio(width, height, size):
    assert sample_images.image_size(width, height) == size


def test_written_pictures_have_the_rows_aspect_ratio(tmp_path):
    rows = [(f"https://a.example/{i}.jpg", "city street", w, h) for i, (w, h) in enumerate([(1920, 1080), (768, 1024), (500, 500)] * 8)]
    sample_images.write_images(rows, tmp_path)
    for url, _, w, h in rows:
        path = tmp_path / sample_images.image_name(url)
        if path.exists():
            with Image.open(path) as image:
                assert image.format == "JPEG" and max(image.size) <= sample_images.MAX_SIDE
                assert abs(image.size[0] / image.size[1] - w / h) < 0.02


@pytest.mark.parametrize(
    "caption,topic",
    [
        ("Calm sea at noon", "sea"), ("forest path in the morning", "forest"), ("Sunset over the hills", "sunset"),
        ("portrait of a woman", "portrait"), ("The city at dusk", "city"), ("Red flowers in a vase", "flower"),
        ("Starry night", "night"), ("abstract canvas print", "art"), (None, "art"), ("", "art"),
        ("sunset over the sea", "sunset"),  # the first topic word wins
    ],
)
def test_topic(caption, topic):
    assert sample_images.topic(caption) == topic


def _mean_colour(topic_caption, n=40):
    """The mean (r, g, b) of n pictures of a caption."""
    totals = [0.0, 0.0, 0.0]
    for i in range(n):
        stat = ImageStat.Stat(sample_images.picture(f"https://x.example/{topic_caption}/{i}.jpg", topic_caption, 800, 600))
        totals = [t + m for t, m in zip(totals, stat.mean)]
    return [t / n for t in totals]


def test_colours_follow_the_topic():
    r, g, b = _mean_colour("sea")
    assert b > r + 40 and b > g
    r, g, b = _mean_colour("forest")
    assert g > r and g > b
    r, g, b = _mean_colour("sunset")
    assert r > b + 20 and r > g
    r, g, b = _mean_colour("night")
    assert max(r, g, b) < 80


def test_rows_vary_within_a_topic():
    pictures = {sample_images.picture(f"https://x.example/{i}.jpg", "calm sea", 800, 600).tobytes() for i in range(20)}
    assert len(pictures) == 20


# The route

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sample-images")
    rows = _rows(40, "sea")
    sample_images.write_images(rows, directory)
    present = [u for u, *_ in rows if not sample_images.is_missing(u)]
    missing = [u for u, *_ in rows if sample_images.is_missing(u)]
    (directory.parent / "secret.jpg").write_bytes(b"not for you")
    return directory, present, missing


def _datasette(config):
    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"].update(config)
    return Datasette(metadata=metadata)


@pytest.fixture(scope="module")
def ds(images):
    return _datasette({"sample_images_dir": str(images[0]), "thumbnail_url": site.SAMPLE_IMAGE_URL})


@pytest.mark.asyncio
async def test_route_serves_the_picture_of_a_url(ds, images):
    directory, present, _ = images
    url = present[0]
    response = await ds.client.get("/-/laion/sample-image?url=" + quote(url, safe=""))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert response.content == (directory / sample_images.image_name(url)).read_bytes()
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "JPEG"
    by_name = await ds.client.get("/-/laion/sample-images/" + sample_images.image_name(url))
    assert by_name.status_code == 200 and by_name.content == response.content


@pytest.mark.asyncio
async def test_route_404_for_a_url_without_a_picture(ds, images):
    response = await ds.client.get("/-/laion/sample-image?url=" + quote(images[2][0], safe=""))
    assert (response.status_code, response.text) == (404, "Image no longer available\n")
    response = await ds.client.get("/-/laion/sample-images/0123456789abcdef0123.jpg")
    assert (response.status_code, response.text) == (404, "Image no longer available\n")


@pytest.mark.asyncio
async def test_route_400_without_a_url(ds):
    response = await ds.client.get("/-/laion/sample-image")
    assert (response.status_code, response.text) == (400, "Give the image's URL: /-/laion/sample-image?url=...\n")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    ["secret.jpg", "..%2Fsecret.jpg", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "0123456789ABCDEF0123.jpg",
     "0123456789abcdef0123.jpg.exe", "0123456789abcdef012.jpg", "0123456789abcdef0123.png", "%00", "."],
)
async def test_route_refuses_names_that_are_not_image_names(ds, name):
    response = await ds.client.get("/-/laion/sample-images/" + name)
    assert response.status_code == 404
    assert b"not for you" not in response.content and b"root:" not in response.content


@pytest.mark.asyncio
async def test_route_traversal_by_path_is_not_served(ds):
    for path in ["/-/laion/sample-images/../secret.jpg", "/-/laion/sample-images/../../secret.jpg"]:
        response = await ds.client.get(path)
        assert response.status_code == 404 and b"not for you" not in response.content


@pytest.mark.asyncio
async def test_route_404_when_no_directory_is_configured(images):
    ds = _datasette({})
    response = await ds.client.get("/-/laion/sample-image?url=" + quote(images[1][0], safe=""))
    assert (response.status_code, response.text) == (404, "No sample images on this site (sample_images_dir is not set)\n")


# The command line and the demo

def test_sample_command_writes_images(tmp_path):
    result = CliRunner().invoke(cli.laion, ["sample", str(tmp_path / "pq"), "--rows", "800", "--images", str(tmp_path / "img")])
    assert result.exit_code == 0, result.output
    names = [p.name for p in (tmp_path / "img").iterdir()]
    assert all(sample_images.NAME_PATTERN.fullmatch(n) for n in names)
    assert 0.65 < len(names) / 800 < 0.85
    assert result.stderr.endswith(f"{len(names):,} images in {tmp_path / 'img'} ({800 - len(names):,} rows have none)\n")
    assert "images: 100%" in result.stderr


def test_sample_command_silent(tmp_path):
    result = CliRunner().invoke(cli.laion, ["sample", str(tmp_path / "pq"), "--rows", "50", "--images", str(tmp_path / "img"), "--silent"])
    assert result.exit_code == 0 and result.stderr == ""
    assert any((tmp_path / "img").iterdir())


def test_demo_metadata_serves_thumbnails_from_the_pictures(tmp_path):
    metadata = site.demo_metadata(tmp_path / "sample-images")
    config = metadata["plugins"]["datasette-laion"]
    assert config["thumbnail_url"] == "/-/laion/sample-image?url={url_encoded}"
    assert config["sample_images_dir"] == str(tmp_path / "sample-images")
    assert json.loads(json.dumps(metadata)) == metadata  # written as metadata.json
    assert site.metadata()["plugins"]["datasette-laion"].get("thumbnail_url") is None  # the site itself: unchanged


def test_demo_writes_the_pictures_once(tmp_path):
    cli.ensure_demo_database(tmp_path, rows=1500, progress=False)
    images = sorted((tmp_path / cli.DEMO_IMAGES).iterdir())
    assert 0.65 < len(images) / 1500 < 0.85
    mtime = images[0].stat().st_mtime_ns
    cli.ensure_demo_database(tmp_path, rows=1500, progress=False)
    assert images[0].stat().st_mtime_ns == mtime
