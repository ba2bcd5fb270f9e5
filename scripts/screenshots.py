#!/usr/bin/env python
"""usage: scripts/screenshots.py [--base URL] [--out DIR] [--rows N]

Screenshots of the site for README, taken with headless Chromium (Debian's
`chromium`, driven by Playwright) from the demo: the home page, a search, the
gallery, the page of one image, the statistics and "is my work in it?".
With --base, from a site already running there; without, it starts
`datasette laion demo --rows N` (generated data and pictures; cached in
~/.cache/datasette-laion) on a free port and stops it afterwards. Writes
DIR/<name>.png (default docs/) and prints each file with its size.
"""
import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DB = "laion-aesthetic-6pls"
VIEWPORT = {"width": 1280, "height": 860}


def pages(base):
    """(name, path) of each screenshot; the image page is a safe row with a picture."""
    rows = httpx.get(f"{base}/{DB}/images.json?_search=dog&_size=40&_shape=objects&punsafe__lt=0.5&domain_id=1",
                     timeout=30)
    rowid = rows.json()["rows"][0]["rowid"]
    for row in rows.json()["rows"]:
        if httpx.get(f"{base}/-/laion/sample-image", params={"url": row["url"]}, timeout=10).status_code == 200:
            rowid = row["rowid"]
            break
    return [
        ("home", "/"),
        ("search", f"/{DB}/images?_search=dog"),
        ("gallery", f"/{DB}/images?_search=dog&_view=gallery"),
        ("image", f"/{DB}/images/{rowid}"),
        ("statistics", "/-/laion/stats"),
        ("mywork", "/-/laion/mywork?q=i.pinimg.com"),
    ]


def start_demo(rows):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "datasette_laion", "demo", "--rows", str(rows), "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # the first demo builds its sample and pictures
    while True:
        try:
            if httpx.get(base + "/-/laion/health", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the demo did not start")
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a running site, e.g. http://127.0.0.1:8001")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the demo started without --base")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    process = None
    base = args.base
    if base is None:
        process, base = start_demo(args.rows)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            for name, path in pages(base):
                page.goto(base + path, wait_until="networkidle")
                target = args.out / f"{name}.png"
                page.screenshot(path=str(target))
                print(f"{target}  {target.stat().st_size // 1024} KB  {path}")
            browser.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
