"""The demo in headless Chromium: its gallery shows pictures (generated,
served by the site itself through thumbnail_url), a quarter of them the
"image no longer available" box, and nothing is fetched from elsewhere.

Runs `datasette laion demo` itself, on a small sample in a temporary folder.
Needs Playwright's Python package and a Chromium (see test_browser.py);
skipped with a reason otherwise."""
import pytest
from browser_support import serving

DB = "/laion-aesthetic-6pls"
LOCAL_THUMBNAIL = "/-/laion/sample-image?url="
# every image has loaded or failed and been replaced by its placeholder
SETTLED = "() => [...document.images].every(i => i.complete)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, browser):  # browser first: no demo to build when the tests are skipped
    directory = tmp_path_factory.mktemp("demo")
    # it builds the sample first
    yield from serving(["demo", "--dir", str(directory), "--rows", "3000"], seconds=120)


class Visit:
    """A page whose requests elsewhere are recorded and refused, and whose
    JS errors are recorded (a 404 for a picture that is "gone" is expected)."""

    def __init__(self, browser, server, safe_mode):
        # tall enough that no thumbnail is below the fold (they are lazy)
        self.context = browser.new_context(viewport={"width": 1280, "height": 12000})
        self.page = self.context.new_page()
        self.errors, self.elsewhere = [], []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
                     and self.errors.append(m.text))
        self.page.route("**/*", self._route(server))
        if not safe_mode:
            self.page.goto(server + "/-/laion/health")
            self.page.evaluate("localStorage.setItem('laion-safe-mode', 'off')")

    def _route(self, server):
        def handle(route):
            if route.request.url.startswith(server):
                route.continue_()
            else:
                self.elsewhere.append(route.request.url)
                route.abort()

        return handle

    def close(self):
        self.context.close()


def test_the_demo_gallery_shows_pictures(browser, demo, screenshots):
    visit = Visit(browser, demo, safe_mode=False)
    try:
        p = visit.page
        # 200 rows: a quarter "gone" on average, a steadier share than on a page of 50
        p.goto(demo + f"{DB}/images?_view=gallery&_size=200", wait_until="load")
        p.wait_for_function(SETTLED, timeout=20000)
        p.screenshot(path=str(screenshots / "demo-gallery.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 1600})
        found = p.evaluate(
            """() => {
                const items = [...document.querySelectorAll('.laion-gallery li')];
                const images = [...document.querySelectorAll('.laion-gallery .laion-thumb img')];
                return {
                    items: items.length,
                    images: images.length,
                    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
                    placeholders: document.querySelectorAll('.laion-gallery .laion-broken').length,
                    notImages: document.querySelectorAll('.laion-gallery .laion-url-text').length,
                    hidden: document.querySelectorAll('.laion-gallery .laion-hidden').length,
                    sources: images.map(i => i.getAttribute('src')),
                    links: [...document.querySelectorAll('.laion-gallery a.laion-thumb')].map(a => a.href),
                };
            }"""
        )
        assert found["items"] == 200 and found["hidden"] == 0
        shown = found["images"] + found["placeholders"]  # every row with an image URL
        assert shown + found["notImages"] == found["items"]
        assert found["loaded"] == found["images"]  # each picture loaded, or was replaced by the placeholder
        assert found["loaded"] >= 0.7 * shown, found
        assert found["placeholders"] >= 1  # a quarter of the images are "gone"
        assert all(src.startswith(LOCAL_THUMBNAIL) for src in found["sources"])
        assert not any(link.startswith(demo) for link in found["links"])  # links go to the real URLs
        assert visit.elsewhere == [] and visit.errors == []
    finally:
        visit.close()


def test_revealing_an_unsafe_thumbnail_links_to_the_image(browser, demo, screenshots):
    visit = Visit(browser, demo, safe_mode=True)
    try:
        p = visit.page
        p.goto(demo + f"{DB}/images?_view=gallery&punsafe__gte=0.5&_size=5", wait_until="load")
        assert p.eval_on_selector_all(".laion-gallery .laion-hidden", "els => els.length") == 5
        assert p.eval_on_selector_all(".laion-gallery img", "els => els.length") == 0  # nothing requested yet
        href = p.get_attribute(".laion-hidden >> nth=0", "data-href")
        p.click(".laion-reveal >> nth=0")
        p.wait_for_selector(".laion-revealed a")
        link = p.get_attribute(".laion-revealed a", "href")
        assert link == href and href.startswith("http") and not href.startswith(demo)
        p.wait_for_function(SETTLED, timeout=5000)
        revealed = p.evaluate("""() => {
            const img = document.querySelector('.laion-revealed img');
            return img ? img.getAttribute('src') : document.querySelector('.laion-revealed .laion-broken') && 'placeholder';
        }""")
        assert revealed == "placeholder" or revealed.startswith(LOCAL_THUMBNAIL)
        p.screenshot(path=str(screenshots / "demo-revealed.png"))
        assert visit.elsewhere == [] and visit.errors == []
    finally:
        visit.close()
