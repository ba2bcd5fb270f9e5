"""thumbnail_url: thumbnails load through a URL template (an image proxy, or
the demo's sample images) while their links keep going to the image."""
import asyncio
import html as html_module
import json
import re
from urllib.parse import quote

import pytest

from datasette_laion import config, render, site

DB = "/laion-aesthetic-6pls"
PROXY = "https://proxy.example.org/rs:fit:256:256/plain/{url_encoded}"


@pytest.mark.parametrize(
    "template,url,src",
    [
        (None, "https://a.example/x.jpg", "https://a.example/x.jpg"),
        (PROXY, "https://a.example/x.jpg", "https://proxy.example.org/rs:fit:256:256/plain/https%3A%2F%2Fa.example%2Fx.jpg"),
        ("https://p.example/?url={url_encoded}&w=256", "https://a.example/x.jpg?v=1&w=9",
         "https://p.example/?url=https%3A%2F%2Fa.example%2Fx.jpg%3Fv%3D1%26w%3D9&w=256"),
        ("https://p.example/{url}", "https://a.example/x.jpg", "https://p.example/https://a.example/x.jpg"),
        ("/-/laion/sample-image?url={url_encoded}", "https://a.example/b c.jpg",
         "/-/laion/sample-image?url=https%3A%2F%2Fa.example%2Fb%20c.jpg"),
        ("https://p.example/{{literal}}/{url_encoded}", "//cdn.example/x.png", "https://p.example/{literal}/%2F%2Fcdn.example%2Fx.png"),
    ],
)
def test_thumbnail_src(template, url, src):
    assert render.thumbnail_src(url, config.validate({**config.DEFAULTS, "thumbnail_url": template})["thumbnail_url"]) == src


def _attributes(html):
    return {name: html_module.unescape(value) for name, value in re.findall(r'([a-z-]+)="([^"]*)"', str(html))}


def test_img_loads_through_the_template_link_goes_to_the_image():
    url = "https://a.example/x.jpg?v=1&w=2"
    shown = render.thumbnail(url, "cap", 0.1, 0.5, PROXY)
    assert re.search(r'<a class="laion-thumb" href="https://a\.example/x\.jpg\?v=1&amp;w=2"', shown)
    assert '<img src="https://proxy.example.org/rs:fit:256:256/plain/https%3A%2F%2Fa.example%2Fx.jpg%3Fv%3D1%26w%3D2"' in shown
    # hidden in safe mode: the thumbnail to show (data-src) and the image to link to (data-href)
    hidden = _attributes(render.thumbnail(url, "cap", 0.9, 0.5, PROXY))
    assert hidden["data-src"] == PROXY.format(url_encoded=quote(url, safe=""))
    assert hidden["data-href"] == url
    # without a template both are the image
    hidden = _attributes(render.thumbnail(url, "cap", 0.9, 0.5))
    assert hidden["data-src"] == hidden["data-href"] == url


@pytest.mark.parametrize("value", ["javascript:alert(1)", "data:image/svg+xml,<svg onload=alert(1)>", "not a url"])
def test_only_http_urls_become_images_whatever_the_template(value):
    shown = render.thumbnail(value, "cap", 0.1, 0.5, PROXY)
    assert "<img" not in shown and "proxy.example.org" not in shown and "laion-url-text" in shown


def test_the_template_does_not_unescape_the_url():
    shown = render.thumbnail('https://evil.example.com/x.jpg"><script>alert(1)</script>', "cap", 0.1, 0.5,
                             "https://p.example/{url}")
    assert re.findall(r"<(/?\w+)", shown) == ["a", "img", "/a"]  # the link and its image, nothing more
    assert 'src="https://p.example/https://evil.example.com/x.jpg&#34;&gt;&lt;script&gt;' in shown


@pytest.mark.parametrize(
    "value,message",
    [
        (42, "datasette-laion: thumbnail_url must be a URL template (a string), not 42"),
        ("https://p.example/thumb.jpg",
         ("datasette-laion: thumbnail_url must contain {url} or {url_encoded}, where the image's URL goes: "
         "'https://p.example/thumb.jpg'")),
        ("https://p.example/{{url}}",
         ("datasette-laion: thumbnail_url must contain {url} or {url_encoded}, where the image's URL goes: "
         "'https://p.example/{{url}}'")),
        ("https://p.example/?u={URL}",
         "datasette-laion: thumbnail_url has an unknown placeholder {URL}; the placeholders are {url} and {url_encoded}"),
        ("https://p.example/{url}/{width}",
         "datasette-laion: thumbnail_url has an unknown placeholder {width}; the placeholders are {url} and {url_encoded}"),
        ("https://p.example/{}",
         "datasette-laion: thumbnail_url has an unknown placeholder {}; the placeholders are {url} and {url_encoded}"),
        ("https://p.example/{url!r}",
         "datasette-laion: thumbnail_url has an unknown placeholder {url!r}; the placeholders are {url} and {url_encoded}"),
        ("https://p.example/{url",
         ("datasette-laion: thumbnail_url is not a valid template (expected '}' before end of string); "
         "write a literal { or } as {{ or }}")),
        ("ftp://p.example/{url}", "datasette-laion: thumbnail_url must start with http://, https:// or /, not 'ftp://p.example/{url}'"),
        ("//p.example/{url}", "datasette-laion: thumbnail_url must start with http://, https:// or /, not '//p.example/{url}'"),
        ("javascript:{url}", "datasette-laion: thumbnail_url must start with http://, https:// or /, not 'javascript:{url}'"),
    ],
)
def test_bad_thumbnail_url_is_refused(value, message):
    with pytest.raises(config.ConfigError) as raised:
        config.validate({**config.DEFAULTS, "thumbnail_url": value})
    assert str(raised.value) == message


def test_bad_thumbnail_url_stops_the_server_at_startup():
    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"]["thumbnail_url"] = "https://p.example/thumb.jpg"
    ds = Datasette(metadata=metadata)
    with pytest.raises(config.ConfigError, match=r"thumbnail_url must contain \{url\} or \{url_encoded\}"):
        asyncio.run(ds.invoke_startup())


def test_serve_says_why_a_template_is_refused(built, tmp_path):
    import subprocess
    import sys

    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"plugins": {"datasette-laion": {"thumbnail_url": "https://img.example.org/{size}/{url}"}}}))
    result = subprocess.run([sys.executable, "-m", "datasette_laion", "serve", str(built.path), "-m", str(metadata),
                             "-p", "0", "--workers", "1"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.endswith("Error: datasette-laion: thumbnail_url has an unknown placeholder {size}; "
                                  "the placeholders are {url} and {url_encoded}\n")


@pytest.mark.parametrize(
    "value,message",
    [(42, "datasette-laion: sample_images_dir must be the path of a directory, not 42"),
     ("", "datasette-laion: sample_images_dir must be the path of a directory, not ''")],
)
def test_bad_sample_images_dir_is_refused(value, message):
    with pytest.raises(config.ConfigError) as raised:
        config.validate({**config.DEFAULTS, "sample_images_dir": value})
    assert str(raised.value) == message


@pytest.fixture(scope="module")
def proxied(built):
    from datasette.app import Datasette

    metadata = site.metadata()
    metadata["plugins"]["datasette-laion"]["thumbnail_url"] = PROXY
    return Datasette(immutables=[str(built.path)], inspect_data=json.loads(built.inspect_path.read_text()),
                     metadata=metadata, settings=site.settings())


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path",
    [
        f"{DB}/images?_size=5",  # Datasette's table page (render_cell)
        f"{DB}/images/1",  # a row
        f"{DB}/images_for_name?name=the",  # a canned query
        f"{DB}/images?_search=dog&_size=5",  # the search page (search_view.cell_writers)
        f"{DB}/images?_search=dog&_size=5&_view=gallery",  # the gallery
        f"{DB}/images?_view=gallery&_size=5",
        "/-/laion/mywork?q=i.pinimg.com",  # "is my work in it?" examples
    ],
)
async def test_every_page_loads_thumbnails_through_the_template(proxied, path):
    response = await proxied.client.get(path, follow_redirects=True)
    assert response.status_code == 200
    pairs = re.findall(r'<a class="laion-thumb" href="([^"]+)"[^>]*><img src="([^"]+)"', response.text)
    assert pairs, path
    for href, src in pairs:
        href, src = html_module.unescape(href), html_module.unescape(src)
        assert src == PROXY.format(url_encoded=quote(href, safe="")), path
    for span in re.findall(r'<span class="laion-thumb laion-hidden"[^>]*>', response.text):
        attributes = _attributes(span)
        assert attributes["data-src"] == PROXY.format(url_encoded=quote(attributes["data-href"], safe=""))
