#!/usr/bin/env python
"""usage: scripts/bench_queries.py DB [--inspect-file F] [--reps N]

Times every canned query of metadata.yml, over JSON and HTML, through
Datasette's ASGI app in-process (no network), on a database built by
`datasette laion build` (12,096,835 rows for the README figures). Prints p50
and p95 per query against the 100 ms target.
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


def arguments(db_path):
    """Realistic parameters for the parameterised queries, from the database."""
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    url = conn.execute("select url from images where rowid = (select max(rowid) / 2 from images)").fetchone()[0]
    conn.close()
    return {
        "images_for_name": [("Thomas Kinkade", "name"), ("Vincent van Gogh", "name"), ("the", "name")],
        "domain_lookup": [("i.pinimg.com", "domain"), ("https://render.fineartamerica.com/x.jpg", "domain")],
        "images_from_domain": [("i.pinimg.com", "domain"), ("cdn.shopify.com", "domain")],
        "image_by_url": [(url, "url"), ("https://no.such.example/x.jpg", "url")],
    }


async def run(ds, reps, args):
    queries = site.metadata()["databases"][site.DATABASE_NAME]["queries"]
    rows = []
    for name in queries:
        for value, param in args.get(name, [(None, None)]):
            query = f"?{param}={quote(value)}" if param else ""
            for fmt in (".json", ""):
                path = f"/{site.DATABASE_NAME}/{name}{fmt}{query}"
                response = await ds.client.get(path)  # warm
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                times = []
                for _ in range(reps):
                    start = time.perf_counter()
                    response = await ds.client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200
                label = f"{name}{fmt or ' (html)'}" + (f" {param}={value[:30]!r}" if param else "")
                rows.append((label, pct(times, 50), pct(times, 95)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--inspect-file", type=Path)
    parser.add_argument("--reps", type=int, default=20)
    options = parser.parse_args()
    inspect_file = options.inspect_file or options.db.parent / "inspect.json"
    ds = site.make_datasette(options.db, inspect_file)
    rows = asyncio.run(run(ds, options.reps, arguments(options.db)))
    print(f"Canned queries (scripts/bench_queries.py), {options.reps} requests each, ms; target p50/p95 <= {TARGET_MS}")
    print(f"{'query':72}{'p50':>8}{'p95':>8}")
    for label, p50, p95 in rows:
        flag = "" if p95 <= TARGET_MS else "  over"
        print(f"{label:72}{p50:8.1f}{p95:8.1f}{flag}")
    print(f"worst p95: {max(r[2] for r in rows):.1f} ms")


if __name__ == "__main__":
    main()
