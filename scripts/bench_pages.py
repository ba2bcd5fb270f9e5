#!/usr/bin/env python
"""usage: scripts/bench_pages.py DB [--inspect-file F] [--reps N]

Times the statistics page and "is my work in it?" (HTML and JSON) through
Datasette's ASGI app in-process (no network), on a database built by
`datasette laion build` (12,096,835 rows for the README figures): a host, a
URL on it, a registered domain, a site that is not there, names (rare, with
quotes, and a word so common that its count is capped). Prints p50 and p95
per page against the 100 ms target.
"""
import argparse
import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchlib import pct  # noqa: E402 (scripts/ is on sys.path)

from datasette_laion import site  # noqa: E402

TARGET_MS = 100


def paths(db_path):
    """Realistic inputs, from the database: its biggest host, a URL on it,
    its biggest registered domain and a host of a mid-sized domain."""
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    host = conn.execute("select domain from domain order by image_counts desc limit 1").fetchone()[0]
    url = conn.execute("select url from images where domain_id = 1 order by rowid limit 1 offset 1000").fetchone()
    url = url[0] if url else f"https://{host}/x.jpg"
    registered = conn.execute("select registered_domain from registered_domain order by image_counts desc limit 1").fetchone()[0]
    middle = conn.execute("select domain from domain where id = (select max(id) / 100 from domain)").fetchone()[0]
    conn.close()
    lookups = [
        host, url, registered, middle, "www.no-such-site-at-all.net",
        "Thomas Kinkade", 'Dwayne "The Rock" Johnson', "Greg Rutkowski", "the", "zzqx nothing",
    ]
    result = ["/-/laion/stats", "/-/laion/stats.json", "/-/laion/mywork"]
    for q in lookups:
        result += [f"/-/laion/mywork?q={quote(q)}", f"/-/laion/mywork.json?q={quote(q)}"]
    return result


async def run(ds, reps, targets):
    rows = []
    for path in targets:
        response = await ds.client.get(path)  # warm
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            response = await ds.client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
        rows.append((path, pct(times, 50), pct(times, 95)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--inspect-file", type=Path)
    parser.add_argument("--reps", type=int, default=20)
    options = parser.parse_args()
    inspect_file = options.inspect_file or options.db.parent / "inspect.json"
    ds = site.make_datasette(options.db, inspect_file if inspect_file.exists() else None)
    rows = asyncio.run(run(ds, options.reps, paths(options.db)))
    print(f"Statistics and 'is my work in it?' (scripts/bench_pages.py), {options.reps} requests each, ms; "
          f"target p50/p95 <= {TARGET_MS}")
    print(f"{'page':72}{'p50':>8}{'p95':>8}")
    for label, p50, p95 in rows:
        flag = "" if p95 <= TARGET_MS else "  over"
        print(f"{label[:72]:72}{p50:8.1f}{p95:8.1f}{flag}")
    print(f"worst p95: {max(r[2] for r in rows):.1f} ms")


if __name__ == "__main__":
    main()
