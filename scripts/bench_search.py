#!/usr/bin/env python
"""usage: scripts/bench_search.py DB [--inspect-file F] [--reps N] [--concurrent-seconds S] [--clients C]
       [--before PYTHON] [--servers plain,ours,before]

Search benchmark, side by side in one run: plain Datasette 0.65 (no plugin,
its own table search, same database file, inspect file and settings) against
datasette-laion, on a database built by `datasette laion build` (12,096,835
rows for the figures in README). For terms across the frequency range (a
handful of matches, ~10k, ~150k, ~1.4M and the most common word), over HTML and
JSON, first page and page 20, with and without filters, it prints p50/p95 per
case and the ratio; then a concurrent run of C clients for S seconds against
each: throughput, p95 and errors. Loopback only; bounded in time.
With --before (the Python of a virtualenv holding the code before a change),
that code is measured too, in the same run, and the table gains its p50/p95
and ours/before. Plain Datasette runs from its own virtualenv (/tmp/laion-plain-venv, created
with `pip install datasette==0.65.5` when missing).
"""
import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchlib import ensure_plain_venv, free_port, pct  # noqa: E402 (scripts/ is on sys.path)

from datasette_laion import site  # noqa: E402

TARGETS = [("handful", 5), ("~10k", 10_000), ("~150k", 150_000), ("~1.4M", 1_400_000), ("most common", None)]
FILTERS = "aesthetic__gte=6.5&punsafe__lte=0.5&pwatermark__lte=0.8"


def pick_terms(db_path):
    """Terms whose document counts are nearest the targets, from fts5vocab."""
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    conn.execute("create virtual table temp.vocab using fts5vocab(main, images_fts, row)")
    rows = conn.execute("select term, doc from temp.vocab where length(term) > 2 and term glob '[a-z]*'").fetchall()
    conn.close()
    picked = []
    for label, target in TARGETS:
        if target is None:
            term, doc = max(rows, key=lambda r: r[1])
        else:
            term, doc = min(rows, key=lambda r: (abs(r[1] - target), r[0]))
        picked.append((label, term, doc))
    return picked


def start(command, port):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(base + "/-/versions.json", timeout=2)
            return process, base
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {' '.join(command)}") from None
            time.sleep(0.2)


def url_for(term, fmt, filtered):
    path = "/laion-aesthetic-6pls/images" + (".json" if fmt == "json" else "")
    return f"{path}?_search={term}" + (f"&{FILTERS}" if filtered else "")


def page_url(client, base, url, page):
    """The URL of page ``page`` (1-based), following the `next` tokens of the
    JSON twin of ``url``; None when there are fewer pages."""
    json_url = url if "/images.json?" in url else url.replace("/images?", "/images.json?", 1)
    token = None
    for _ in range(page - 1):
        body = client.get(base + json_url + (f"&_next={token}" if token else ""), timeout=60).json()
        token = body.get("next")
        if not token:
            return None
    return url + f"&_next={token}"


def time_requests(client, base, url, reps):
    times, errors = [], 0
    for _ in range(reps):
        start = time.perf_counter()
        try:
            response = client.get(base + url, timeout=30)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        times.append((time.perf_counter() - start) * 1000)
        errors += not ok
    return times, errors


async def concurrent(base, urls, clients, seconds):
    latencies, errors = [], 0
    stop = time.monotonic() + seconds

    async def worker(i):
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            n = i
            while time.monotonic() < stop:
                url = urls[n % len(urls)]
                n += clients
                start = time.perf_counter()
                try:
                    response = await client.get(url)
                    if response.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append((time.perf_counter() - start) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    return len(latencies) / elapsed, pct(latencies, 50), pct(latencies, 95), errors, len(latencies)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--inspect-file", type=Path)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--concurrent-seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--before", type=Path, help="Python of a virtualenv with the code before a change")
    parser.add_argument("--servers", default="plain,ours,before",
                        help="which of plain, ours, before to run (before: only with --before)")
    args = parser.parse_args()
    inspect_file = args.inspect_file or args.db.parent / "inspect.json"
    terms = pick_terms(args.db)
    print("terms:", ", ".join(f"{label}: {term!r} ({doc:,} matches)" for label, term, doc in terms))

    plain_port, ours_port, before_port = free_port(), free_port(), free_port()
    settings = site.setting_args()
    wanted = {s.strip() for s in args.servers.split(",")}
    plain_cmd = None
    if "plain" in wanted:
        plain_cmd = [str(ensure_plain_venv()), "serve", "-i", str(args.db), "--inspect-file", str(inspect_file),
                     "-p", str(plain_port)] + settings
    ours_cmd = [sys.executable, "-m", "datasette_laion", "serve", str(args.db), "--inspect-file", str(inspect_file),
                "-p", str(ours_port)]
    servers = [("plain", plain_cmd, plain_port), ("ours", ours_cmd, ours_port)]
    if args.before:
        before_cmd = [str(args.before), "-m", "datasette_laion", "serve", str(args.db), "--inspect-file",
                      str(inspect_file), "-p", str(before_port)]
        servers.append(("before", before_cmd, before_port))
    servers = [server for server in servers if server[0] in wanted or server[0] == "ours"]
    results = {}
    for name, command, port in servers:
        process, base = start(command, port)
        try:
            with httpx.Client() as client:
                for label, term, _doc in terms:
                    for fmt in ("html", "json"):
                        for filtered in (False, True):
                            for page in (1, 20):
                                key = (label, fmt, filtered, page)
                                url = url_for(term, fmt, filtered)
                                if page > 1:
                                    url = page_url(client, base, url, page)
                                if url is None:
                                    results.setdefault(name, {})[key] = None
                                    continue
                                client.get(base + url, timeout=30)  # warm
                                results.setdefault(name, {})[key] = time_requests(client, base, url, args.reps)
            urls = [url_for(term, fmt, filtered) for _, term, _ in terms for fmt in ("html", "json") for filtered in (False, True)]
            results.setdefault("concurrent", {})[name] = asyncio.run(
                concurrent(base, urls, args.clients, args.concurrent_seconds)
            )
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"\nSearch benchmark (scripts/bench_search.py), {args.reps} requests per case, ms")
    header = f"{'case':44}{'plain p50':>10}{'p95':>9}{'err':>5}{'ours p50':>10}{'p95':>8}{'err':>5}{'p50 ratio':>11}"
    if args.before:
        header += f"{'before p50':>11}{'p95':>8}{'ours/before':>12}"
    print(header)
    worst = {"p50": 0, "p95": 0, "errors": 0}
    worst_before = {"p50": 0, "p95": 0}
    table = []
    for key in results["ours"]:
        label, fmt, filtered, page = key
        name = f"{label} {fmt} page {page}{' +filters' if filtered else ''}"
        plain, ours = results.get("plain", {}).get(key), results["ours"][key]
        if ours is None:
            print(f"{name:44}  (fewer than {page} pages)")
            continue
        o50, o95 = pct(ours[0], 50), pct(ours[0], 95)
        worst["p50"], worst["p95"] = max(worst["p50"], o50), max(worst["p95"], o95)
        worst["errors"] += ours[1]
        if plain:
            p50, p95 = pct(plain[0], 50), pct(plain[0], 95)
            line = f"{name:44}{p50:10.1f}{p95:9.1f}{plain[1]:5d}{o50:10.1f}{o95:8.1f}{ours[1]:5d}{p50 / o50:10.1f}x"
        else:
            line = f"{name:44}{'-':>10}{'-':>9}{'-':>5}{o50:10.1f}{o95:8.1f}{ours[1]:5d}{'':>11}"
        before = results.get("before", {}).get(key)
        if before:
            b50, b95 = pct(before[0], 50), pct(before[0], 95)
            worst_before["p50"], worst_before["p95"] = max(worst_before["p50"], b50), max(worst_before["p95"], b95)
            line += f"{b50:11.1f}{b95:8.1f}{o50 / b50:11.2f}x"
        print(line)
        table.append({"case": name, "plain": plain, "ours": ours, "before": before})
    print(f"\nworst case, ours: p50 {worst['p50']:.1f} ms, p95 {worst['p95']:.1f} ms, errors {worst['errors']} "
          "(targets: p50 <= 50, p95 <= 150, 0 errors)")
    if args.before:
        print(f"worst case, before: p50 {worst_before['p50']:.1f} ms, p95 {worst_before['p95']:.1f} ms "
              f"(ours/before: p50 {worst['p50'] / worst_before['p50']:.2f}x, p95 {worst['p95'] / worst_before['p95']:.2f}x)")
    print(f"\n{args.clients} clients for {args.concurrent_seconds}s, mixed searches:")
    for name, (rps, p50, p95, errors, n) in results["concurrent"].items():
        print(f"  {name:6} {rps:8.1f} req/s   p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   errors {errors} of {n}")
    if args.json:
        args.json.write_text(json.dumps({"cases": table, "concurrent": results["concurrent"], "terms": terms}, default=str))


if __name__ == "__main__":
    main()
