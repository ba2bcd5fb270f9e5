"""The statistics and "is my work in it?" pages in headless Chromium: they load
without errors, the charts have real bars and axes, answers show thumbnails
in safe mode, hostile input stays inert.

Needs Playwright's Python package and a Chromium (Debian's /usr/bin/chromium;
`.ci/run` installs both); skipped with a reason otherwise. Screenshots go to
$LAION_SCREENSHOTS (default: a temporary folder, printed)."""
from urllib.parse import quote

import httpx
import pytest
from browser_support import PNG

HISTOGRAMS = ["aesthetic", "punsafe", "pwatermark", "width", "height", "aspect_ratio", "caption_length"]


@pytest.fixture
def page(browser, server):
    """A page recording JS errors, console errors and dialogs; image requests
    are answered locally, and nothing else leaves the machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors, page.dialogs, page.outside = [], [], []

    def console(message):
        if message.type == "error" and "Failed to load resource" not in message.text:
            page.errors.append(message.text)

    def dialog(d):
        page.dialogs.append(d.message)
        d.dismiss()

    def route(r):
        url = r.request.url
        if url.startswith(server):
            r.continue_()
        elif r.request.resource_type == "image" and "pinimg" not in url:
            r.fulfill(status=200, content_type="image/png", body=PNG)
        else:
            if r.request.resource_type != "image":  # pinimg's images are dead on purpose
                page.outside.append(url)
            r.abort()

    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", console)
    page.on("dialog", dialog)
    page.route("**/*", route)
    yield page
    context.close()


def chart_shape(page, selector):
    return page.eval_on_selector(
        selector,
        """svg => ({
            rects: svg.querySelectorAll('rect.laion-bar').length,
            nonEmpty: [...svg.querySelectorAll('rect.laion-bar')].filter(r => +r.dataset.count > 0).length,
            drawn: [...svg.querySelectorAll('rect.laion-bar')].filter(r => +r.dataset.count > 0 && r.getBoundingClientRect().height > 0 && r.getBoundingClientRect().width > 0).length,
            lines: svg.querySelectorAll('line').length,
            axes: svg.querySelectorAll('line.laion-axis').length,
            texts: svg.querySelectorAll('text').length,
            tickLabels: [...svg.querySelectorAll('text.laion-tick-label')].map(t => t.textContent),
            title: svg.querySelector('title').textContent,
            width: svg.getBoundingClientRect().width,
            height: svg.getBoundingClientRect().height,
        })""",
    )


def test_statistics_page(page, server, screenshots):
    page.goto(server + "/", wait_until="networkidle")
    page.click("text=Statistics: the dataset at a glance")
    page.wait_for_load_state("networkidle")
    assert page.url == server + "/-/laion/stats"
    page.screenshot(path=str(screenshots / "stats.png"), full_page=True)
    assert page.errors == [] and page.dialogs == [] and page.outside == []
    for name in HISTOGRAMS:
        shape = chart_shape(page, f"#chart-{name}")
        assert shape["rects"] >= 5, (name, shape)
        assert shape["drawn"] == shape["nonEmpty"] >= 3, (name, shape)  # every non-empty bar is visible
        assert shape["axes"] == 2 and shape["lines"] >= 8, (name, shape)
        assert len(shape["tickLabels"]) >= 5 and "0" in shape["tickLabels"], (name, shape)
        assert shape["width"] > 400 and shape["height"] > 150
    for chart in ("#chart-top-domains", "#chart-top-registered-domains"):
        shape = chart_shape(page, chart)
        assert shape["rects"] == 20 and shape["drawn"] == 20, shape
        assert shape["axes"] == 2
    assert page.text_content("#chart-top-domains a >> nth=0") == "i.pinimg.comi.pinimg.com"  # label, then its <title>
    page.eval_on_selector("#aesthetic", "e => e.scrollIntoView()")
    page.screenshot(path=str(screenshots / "stats-chart.png"))
    page.locator("#sources + p + .laion-charts").screenshot(path=str(screenshots / "stats-top-domains.png"))
    page.locator(".laion-thresholds").screenshot(path=str(screenshots / "stats-flagged.png"))
    # bar labels link to their domain
    page.click("#chart-top-domains a >> nth=0")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/laion-aesthetic-6pls/domain/1")


def test_mywork_site(page, server, screenshots):
    page.goto(server + "/", wait_until="networkidle")
    page.click("text=Is my work in it?")
    page.wait_for_load_state("networkidle")
    page.fill("input[name=q]", "https://i.pinimg.com/some/picture.jpg")
    page.click("button:has-text('Look it up')")
    page.wait_for_load_state("networkidle")
    verdict = page.inner_text(".laion-verdict")
    assert "come from i.pinimg.com" in verdict
    assert page.eval_on_selector_all(".laion-gallery .laion-thumb", "els => els.length") == 12
    page.wait_for_timeout(300)
    # pinimg's images are dead here: the placeholder replaces them
    assert page.eval_on_selector_all(".laion-broken", "els => els.length") >= 1
    page.screenshot(path=str(screenshots / "mywork-site.png"), full_page=True)
    assert page.errors == [] and page.dialogs == [] and page.outside == []


def test_mywork_name(page, server, screenshots):
    page.goto(server + "/-/laion/mywork?q=" + quote('Dwayne "The Rock" Johnson'), wait_until="networkidle")
    assert "3 images" in page.inner_text(".laion-verdict")
    live = page.eval_on_selector_all(".laion-gallery .laion-thumb img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length")
    assert live == 3
    page.screenshot(path=str(screenshots / "mywork-name.png"), full_page=True)
    page.goto(server + "/-/laion/mywork?q=the", wait_until="networkidle")
    hidden = page.eval_on_selector_all(".laion-gallery .laion-hidden", "els => els.length")
    page.screenshot(path=str(screenshots / "mywork-common-word.png"), full_page=True)
    assert page.errors == [] and page.dialogs == []
    examples = httpx.get(server + "/-/laion/mywork.json?q=the").json()["examples"]
    flagged = sum(1 for e in examples if e["punsafe"] is None or e["punsafe"] >= 0.5)
    assert hidden == flagged > 0  # safe mode: flagged images are not even requested
    assert page.eval_on_selector_all(".laion-gallery .laion-hidden img", "els => els.length") == 0


HOSTILE = {
    "script": "<script>alert(1)</script>",
    "img": '"><img src=x onerror=alert(2)>',
    "javascript": "javascript:alert(3)",
    "quotes": "' onmouseover='alert(4)' x='",
    "url": 'https://evil.example.com/"><svg onload=alert(5)>',
    "long": "x" * 5000,
    "control": "a\x00b<script>alert(6)</script>",
}


@pytest.mark.parametrize("name,payload", HOSTILE.items(), ids=list(HOSTILE))
def test_mywork_hostile_input_stays_inert(page, server, screenshots, name, payload):
    page.goto(server + "/-/laion/mywork", wait_until="networkidle")
    baseline = page.evaluate("document.scripts.length")
    for kind in ("auto", "site", "name"):
        page.goto(server + f"/-/laion/mywork?kind={kind}&q=" + quote(payload), wait_until="networkidle")
        assert page.dialogs == [] and page.errors == []
        found = page.evaluate(
            """() => ({
                injected: document.querySelectorAll('img[src="x"], [onerror], [onload], [onmouseover], svg[onload]').length,
                scripts: document.scripts.length,
                outside: [...document.scripts].filter(s => s.src && !s.src.startsWith(location.origin + '/')).length,
                jsLinks: [...document.querySelectorAll('a[href]')].filter(a => /^\\s*(javascript|data|vbscript):/i.test(a.getAttribute('href'))).length,
            })"""
        )
        assert found == {"injected": 0, "scripts": baseline, "outside": 0, "jsLinks": 0}
    page.screenshot(path=str(screenshots / f"mywork-hostile-{name}.png"))
