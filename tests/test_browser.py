"""The site in headless Chromium: pages load without errors, thumbnails are
images, planted payloads stay inert, safe mode hides and reveals.

Needs Playwright's Python package and a Chromium (Debian's /usr/bin/chromium;
`.ci/run` installs both); skipped with a reason otherwise. Screenshots go to
$LAION_SCREENSHOTS (default: a temporary folder, printed)."""
from urllib.parse import quote

import pytest
from browser_support import PNG

DB = "/laion-aesthetic-6pls"


# every image has loaded or failed (lazy thumbnails below the fold aside)
SETTLED = "() => [...document.images].every(i => i.complete || i.loading === 'lazy')"


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
        self.navigations = []
        self.page.on("framenavigated", lambda frame: self.navigations.append(frame.url))
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

    def goto(self, url, settled=False):
        """Load url; with settled, return as soon as every image has loaded
        or failed (its error handlers have run) instead of waiting for the
        network to be idle for half a second."""
        if not settled:
            self.page.goto(url, wait_until="networkidle")
            return self.page
        self.page.goto(url, wait_until="load")
        self.page.wait_for_function(SETTLED, timeout=5000)
        return self.page

    def close(self):
        self.context.close()


def assert_inert(page):
    """Nothing from the data or the address became markup that runs: no
    injected image, no event handler attribute, no script from elsewhere or
    inline script calling alert, no javascript:/data:/vbscript: link or source,
    no frame."""
    injected = page.evaluate(
        """() => ({
            injectedImages: document.querySelectorAll('img[src="x"], img[onerror]').length,
            handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => /^on/i.test(a.name))).length,
            scripts: [...document.scripts].map(s => s.src || 'inline').filter(s => s !== 'inline' && !s.startsWith(location.origin + '/')),
            alertScripts: [...document.scripts].filter(s => /alert\\(/.test(s.textContent)).length,
            jsLinks: [...document.querySelectorAll('a[href], area[href], img[src], iframe[src], form[action], embed[src], object[data], link[href]')]
                .filter(e => /^\\s*(javascript|data|vbscript):/i.test(e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action') || e.getAttribute('data') || '')).length,
            frames: document.querySelectorAll('iframe, frame, object, embed, base').length,
        })"""
    )
    assert injected == {"injectedImages": 0, "handlers": 0, "scripts": [], "alertScripts": 0, "jsLinks": 0, "frames": 0}


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


def _payload_rows(db_path):
    """One rowid for each planted payload of the sample generator, and the
    id of the host whose URLs carry markup."""
    import sqlite3

    from datasette_laion.sample import AWKWARD_CAPTIONS, AWKWARD_URLS

    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    markup = [u for u, kind in AWKWARD_URLS if "URL" in kind and ("markup" in kind or "injection" in kind or ":" in kind)]
    markup += [c for c, kind in AWKWARD_CAPTIONS if kind in ("script tag", "attribute injection", "javascript: link", "javascript: text")]
    rows = sorted({conn.execute("select min(rowid) from images where url = ? or text = ?", [v, v]).fetchone()[0] for v in markup} - {None})
    evil = conn.execute("select id from domain where domain = 'evil.example.com'").fetchone()[0]
    conn.close()
    return rows, evil, markup


XSS = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
SVG = "<svg onload=alert(3)>"


def _page_kinds(db_path):
    """(name, path): every kind of page, showing the planted payload rows, or
    with payloads in its address."""
    rows, evil, markup = _payload_rows(db_path)
    q = quote
    js_url = next(v for v in markup if v.startswith("javascript:"))
    markup_url = next(v for v in markup if v.startswith("https://evil") and "script" in v)
    kinds = [
        ("home", f"/?q={q(XSS)}"),
        ("table-no-host", f"{DB}/images?domain_id__isnull=1&_size=max"),
        ("table-evil-host", f"{DB}/images?domain_id={evil}&_size=100"),
        ("table-labels", f"{DB}/images?domain_id={evil}&_labels=on&_col=url&_col=text&_col=domain_id"),
        ("search-script", f"{DB}/images?_search=script+alert&_searchmode=raw&_size=100"),
        ("search-javascript", f"{DB}/images?_search=javascript&_size=100"),
        ("search-hostile-words", f"{DB}/images?_search={q(IMG)}&_size=100"),
        ("gallery-onerror", f"{DB}/images?_search=onerror&_view=gallery&_size=100"),
        ("gallery-evil-host", f"{DB}/images?_domain=evil.example.com&_view=gallery&_size=100"),
        ("browse-filtered", f"{DB}/images?_view=table&punsafe__lte=1&_size=20&_next={rows[0] - 1}"),
        ("stats", f"/-/laion/stats?x={q(SVG)}"),
        ("mywork-evil-host", "/-/laion/mywork?q=evil.example.com"),
        ("mywork-markup-url", f"/-/laion/mywork?q={q(markup_url)}"),
        ("sql-payload-rows", f"{DB}?sql=" + q("select rowid, url, text, punsafe from images where domain_id is null or text like '%<%' or url like '%<%'")),
        ("sql-payload-literal", f"{DB}?sql=" + q(f"select '{XSS}' as a, '{IMG}' as b, 'javascript:alert(4)' as url")),
        ("facet-artists", f"{DB}/artists?_facet=category&name__contains={q(XSS)}"),
        ("facet-registered-domain", f"{DB}/registered_domain?_facet=hosts&registered_domain__notlike={q(IMG)}"),
        ("error-sort", f"{DB}/images?_sort={q(XSS)}"),
        ("error-column", f"{DB}/images?{q(IMG)}=1"),
        ("error-filter", f"{DB}/images?text__contains={q(XSS)}"),
        ("error-row", f"{DB}/images/{q(XSS, safe='')}"),
        ("error-search-syntax", f"{DB}/images?_search={q(IMG)}&_searchmode=raw"),
        ("error-sql", f"{DB}?sql={q(XSS)}"),
        ("error-facet", f"{DB}/images?_facet={q(SVG)}"),
        ("error-query-parameter", f"{DB}/images_for_name?name={q(XSS)}&_timelimit={q(IMG)}"),
        ("error-mywork-kind", f"/-/laion/mywork?kind={q(XSS)}&q=x"),
        ("error-next", f"{DB}/images?_next={q(SVG)}"),
    ]
    kinds += [(f"row-{rowid}", f"{DB}/images/{rowid}") for rowid in rows]
    queries = {
        "figures": "", "top_domains": "", "top_registered_domains": "", "artist_counts": "", "celebrity_counts": "",
        "character_counts": "", "images_for_name": "?name=script", "domain_lookup": "?domain=evil.example.com",
        "images_from_domain": "?domain=evil.example.com", "image_by_url": f"?url={q(js_url)}",
    }
    kinds += [(f"query-{name}", f"{DB}/{name}{args}") for name, args in queries.items()]
    kinds += [("query-image-by-markup-url", f"{DB}/image_by_url?url={q(markup_url)}")]
    return kinds


@pytest.fixture(scope="module")
def page_kinds(built):
    return dict(_page_kinds(built.path))


KIND_NAMES = [
    "home", "table-no-host", "table-evil-host", "table-labels", "search-script", "search-javascript",
    "search-hostile-words", "gallery-onerror", "gallery-evil-host", "browse-filtered", "stats", "mywork-evil-host",
    "mywork-markup-url", "sql-payload-rows", "sql-payload-literal", "facet-artists", "facet-registered-domain",
    "error-sort", "error-column", "error-filter", "error-row", "error-search-syntax", "error-sql", "error-facet",
    "error-query-parameter", "error-mywork-kind", "error-next", "rows", "queries",
]


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_planted_payloads_stay_inert(browser, server, screenshots, page_kinds, kind):
    """Every kind of page, with safe mode off (every image shown): the
    payloads of the data and of the address are text, nothing runs."""
    if kind in ("rows", "queries"):
        prefix = {"rows": "row-", "queries": "query-"}[kind]
        paths = {n: p for n, p in page_kinds.items() if n.startswith(prefix)}
        assert len(paths) >= 8
    else:
        paths = {kind: page_kinds[kind]}
    page = Page(browser, server, safe_mode=False)
    try:
        for name, path in paths.items():
            p = page.goto(server + path, settled=True)
            assert page.dialogs == [] and page.errors == [], (name, page.dialogs, page.errors)
            assert_inert(p)
            # reveal everything hidden, hover and look again
            p.evaluate("document.querySelectorAll('.laion-reveal').forEach(b => b.click())")
            p.evaluate("document.querySelectorAll('td, .laion-caption').forEach(e => e.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})))")
            p.wait_for_function(SETTLED, timeout=5000)
            assert page.dialogs == [] and page.errors == [], name
            assert_inert(p)
            assert all(url.startswith(server) for url in page.navigations), page.navigations
            if len(paths) == 1 or name.endswith(("-1", "figures")):
                p.screenshot(path=str(screenshots / f"payloads-{name}.png"))
        # the planted payloads were on these pages: as text, or attribute values
        if kind in ("table-no-host", "sql-payload-rows"):
            assert "javascript:alert" in p.inner_text("body") and "data:image/svg+xml" in p.inner_text("body")
        if kind in ("table-evil-host", "gallery-evil-host", "sql-payload-rows", "search-script", "error-sort"):
            assert p.evaluate(
                """() => document.body.innerText.includes('<script>alert(') || [...document.querySelectorAll('*')]
                    .some(e => [...e.attributes].some(a => a.value.includes('<script>alert(')))"""
            )
    finally:
        page.close()


def test_a_refusal_page(browser, server, screenshots):
    """What a visitor sees for a request the site refuses: Datasette's error
    page, saying what to do instead."""
    page = Page(browser, server)
    try:
        p = page.goto(server + f"{DB}/images?_sort=url")
        p.screenshot(path=str(screenshots / "refusal.png"))
        assert p.inner_text("h1") == "Not available on this table"
        assert "sort by one of rowid, punsafe, pwatermark, aesthetic, domain_id, url_hash, or search" in p.inner_text("body")
        assert page.errors == []
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
        # every thumbnail shown (a dead one, pinimg here, becomes its placeholder)
        assert p.eval_on_selector_all("td.col-url img, td.col-url .laion-broken", "els => els.length") == 10
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
        # thumbnails are lazy: the last rows' load (and fail) once scrolled near
        p.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        p.wait_for_function("() => document.querySelectorAll('.laion-broken').length >= 10", timeout=10000)
        p.evaluate("window.scrollTo(0, 0)")
        assert p.eval_on_selector_all(".laion-broken", "els => els.length") == 10
        assert "image no longer available" in p.inner_text(".laion-broken >> nth=0")
        p.screenshot(path=str(screenshots / "dead-images.png"))
    finally:
        page.close()


def test_image_page_in_the_browser(browser, server, screenshots, built):
    """The page of one image, as a visitor sees it: every part, safe mode
    on (an unsafe image waits for a click) and off, no console errors."""
    import sqlite3

    conn = sqlite3.connect(f"file:{built.path}?immutable=1", uri=True)
    safe = conn.execute("select rowid from images where punsafe < 0.5 and domain_id = 1 order by rowid limit 1").fetchone()[0]
    unsafe = conn.execute("select rowid from images where punsafe >= 0.5 and domain_id is not null"
                          " order by rowid limit 1").fetchone()[0]
    conn.close()
    page = Page(browser, server)
    try:
        p = page.goto(server + f"{DB}/images/{safe}")
        # the image (pinimg's are dead in these tests: its placeholder then)
        for part in (".laion-image-large .laion-thumb :is(img, .laion-broken)", ".laion-caption-full", ".laion-facts", ".laion-gallery li",
                     ".laion-image-links", "table.rows-and-columns"):
            assert p.query_selector(part) is not None, part
        facts = p.inner_text(".laion-facts")
        for word in ("aesthetic", "top ", "punsafe", "pwatermark", "similarity", "size", "host", "names in the caption"):
            assert word in facts
        p.screenshot(path=str(screenshots / "image-page.png"), full_page=True)
        assert_inert(p)
        p = page.goto(server + f"{DB}/images/{unsafe}")
        assert p.query_selector(".laion-image-large .laion-hidden .laion-reveal") is not None
        assert p.query_selector(".laion-image-large img") is None
        p.click(".laion-image-large .laion-reveal")
        p.wait_for_selector(".laion-image-large .laion-revealed img")
        p.click(".laion-safe-toggle button")  # safe mode off: shown at once, on every page
        p.wait_for_load_state("networkidle")
        assert p.query_selector(".laion-image-large .laion-hidden") is None
        assert p.query_selector(".laion-image-large img, .laion-image-large .laion-broken") is not None
        p.screenshot(path=str(screenshots / "image-page-safe-mode-off.png"))
        p.click(".laion-safe-toggle button")  # back on, for the other tests
        p.wait_for_load_state("networkidle")
        assert page.errors == [] and page.dialogs == []
    finally:
        page.close()
