"""The site in headless Chromium: pages load without errors, thumbnails are
images, planted payloads stay inert, safe mode hides and reveals.

Needs Playwright's Python package and a Chromium (Debian's /usr/bin/chromium;
`.ci/run` installs both); skipped with a reason otherwise. Screenshots go to
$LAION_SCREENSHOTS (default: a temporary folder, printed)."""
import pytest
from browser_support import PNG

DB = "/laion-aesthetic-6pls"


class Page:
    """A page with its JS errors, console errors and dialogs recorded, and
    image requests answered locally (live) or refused (dead)."""

    def __init__(self, browser, server, safe_mode=True):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors, self.dialogs = [], []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.route("**/*", self._route(server))
        if not safe_mode:
            self.page.goto(server + "/-/laion/health")
            self.page.evaluate("localStorage.setItem('laion-safe-mode', 'off')")

    def _console(self, message):
        # A dead image is expected (a quarter of LAION's are); JS errors are not.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    @staticmethod
    def _route(server):
        def handle(route):
            url = route.request.url
            if url.startswith(server):
                route.continue_()
            elif route.request.resource_type == "image" and "pinimg" not in url and "fineartamerica" not in url:
                route.fulfill(status=200, content_type="image/png", body=PNG)
            else:
                route.abort()  # dead images, and nothing else leaves the machine

        return handle

    def goto(self, url):
        self.page.goto(url, wait_until="networkidle")
        return self.page

    def close(self):
        self.context.close()


def assert_inert(page):
    injected = page.evaluate(
        """() => ({
            injectedImages: document.querySelectorAll('img[src="x"], img[onerror]').length,
            handlers: document.querySelectorAll('[onerror], [onload], [onclick]').length,
            scripts: [...document.scripts].map(s => s.src || 'inline').filter(s => s !== 'inline' && !s.startsWith(location.origin + '/')),
            jsLinks: [...document.querySelectorAll('a[href], img[src]')].filter(e => /^\\s*(javascript|data|vbscript):/i.test(e.getAttribute('href') || e.getAttribute('src'))).length,
        })"""
    )
    assert injected == {"injectedImages": 0, "handlers": 0, "scripts": [], "jsLinks": 0}


@pytest.mark.parametrize(
    "name,path",
    [
        ("home", "/"),
        ("search-table", f"{DB}/images?_search=dog&_size=20"),
        ("search-gallery", f"{DB}/images?_search=dog&_size=24&_view=gallery"),
        ("domain", f"{DB}/domain?_sort_desc=image_counts"),
        ("artists", f"{DB}/artists?_sort_desc=image_counts"),
        ("celebrity-counts", f"{DB}/celebrity_counts"),
        ("images-table", f"{DB}/images?_size=20"),
        ("row", f"{DB}/images/1"),
    ],
)
def test_pages_load_without_errors(browser, server, screenshots, name, path):
    page = Page(browser, server)
    try:
        p = page.goto(server + path)
        p.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)
        assert page.errors == [] and page.dialogs == []
        assert_inert(p)
        if "images" in path:
            thumbs = p.eval_on_selector_all(".laion-thumb", "els => els.length")
            live = p.eval_on_selector_all(".laion-thumb img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")
            assert thumbs >= 1
            if "_size=" in path:
                assert live > 0  # thumbnails are real <img> elements that load
    finally:
        page.close()


def test_planted_payloads_stay_inert(browser, server, screenshots):
    page = Page(browser, server, safe_mode=False)
    try:
        for i, path in enumerate([
            f"{DB}/images?_search=script+alert&_searchmode=raw&_size=max",
            f"{DB}/images?_search=onerror&_view=gallery&_size=max",
            f"{DB}/images?_search=javascript&_size=max",
            f"{DB}/images?url__contains=javascript&_size=50",
            f"{DB}/images?url__contains=evil.example.com&_size=50",
            f"{DB}/images?url__startswith=data:&_size=50",
        ]):
            p = page.goto(server + path)
            p.screenshot(path=str(screenshots / f"payloads-{i}.png"))
            assert page.dialogs == [], path
            assert page.errors == [], path
            assert_inert(p)
            # reveal everything and look again
            p.evaluate("document.querySelectorAll('.laion-reveal').forEach(b => b.click())")
            p.wait_for_timeout(200)
            assert page.dialogs == [] and page.errors == []
            assert_inert(p)
    finally:
        page.close()


def test_safe_mode_hides_and_reveals(browser, server, screenshots):
    page = Page(browser, server)
    try:
        p = page.goto(server + f"{DB}/images?punsafe__gte=0.5&_size=10")
        assert p.eval_on_selector_all(".laion-hidden", "els => els.length") == 10
        assert p.eval_on_selector_all("td.col-url img", "els => els.length") == 0
        assert "Safe mode: on" in p.inner_text(".laion-safe-toggle")
        p.screenshot(path=str(screenshots / "safe-mode-on.png"))
        p.click(".laion-reveal >> nth=0")
        p.wait_for_selector(".laion-revealed img")
        assert p.eval_on_selector_all("td.col-url img", "els => els.length") == 1
        # switch safe mode off: everything is shown, and stays so
        p.click(".laion-safe-toggle button")
        p.wait_for_load_state("networkidle")
        assert "Safe mode: off" in p.inner_text(".laion-safe-toggle")
        assert p.eval_on_selector_all(".laion-hidden", "els => els.length") == 0
        assert p.eval_on_selector_all("td.col-url img", "els => els.length") == 10
        p.screenshot(path=str(screenshots / "safe-mode-off.png"))
        p.click(".laion-safe-toggle button")
        p.wait_for_load_state("networkidle")
        assert p.eval_on_selector_all(".laion-hidden", "els => els.length") == 10
        assert page.errors == []
    finally:
        page.close()


def test_dead_images_get_a_placeholder(browser, server, screenshots):
    page = Page(browser, server)
    try:
        p = page.goto(server + f"{DB}/images?_search=the&_domain=i.pinimg.com&punsafe__lt=0.5&_size=10")
        p.wait_for_timeout(300)
        assert p.eval_on_selector_all(".laion-broken", "els => els.length") == 10
        assert "image no longer available" in p.inner_text(".laion-broken >> nth=0")
        p.screenshot(path=str(screenshots / "dead-images.png"))
    finally:
        page.close()
