#!/usr/bin/env python3
"""usage: scripts/fuzz_site.py [-h] [--examples N] [--seed N] [--kind KIND] [--database NAME]
                            [--time-limit SECONDS] [--margin SECONDS] [--slowest N] BASE_URL

Send hostile requests to a running site over HTTP, the very strategies of the
test suite (tests/hostile_requests.py: every route and parameter, FTS syntax
junk, huge values, unicode, control characters), and report the answers:
counts by status and by kind of request, the slowest requests, and every
problem (a 5xx, a 4xx without a readable message, an answer slower than the
SQL time limit plus a margin). Exits 1 when there is a problem. Example:

    datasette laion serve /data/laion-aesthetic-6pls.db --port 8765 &
    .venv/bin/python scripts/fuzz_site.py http://127.0.0.1:8765 --examples 2000
"""
import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import hostile_requests  # the strategies, shared with the tests

KINDS = {
    "tables": hostile_requests.table_requests,
    "searches": hostile_requests.search_requests,
    "browsing": hostile_requests.browse_requests,
    "queries": hostile_requests.query_requests,
    "sql": hostile_requests.sql_requests,
    "rows": hostile_requests.row_requests,
    "pages": hostile_requests.page_requests,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", metavar="BASE_URL", help="the running site, e.g. http://127.0.0.1:8765")
    parser.add_argument("--examples", type=int, default=500, metavar="N", help="requests to send (default: 500)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="same seed, same requests (default: 0)")
    parser.add_argument("--kind", choices=sorted(KINDS), action="append", help="only these kinds of request (repeatable)")
    parser.add_argument("--database", default="laion-aesthetic-6pls", metavar="NAME")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="the site's SQL time limit (default: read from /-/settings.json)")
    parser.add_argument("--margin", type=float, default=1.0, metavar="SECONDS", help="allowed beyond it (default: 1)")
    parser.add_argument("--slowest", type=int, default=15, metavar="N", help="slowest requests to list (default: 15)")
    args = parser.parse_args(argv)

    base = args.base_url.rstrip("/")
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    try:
        description = client.get(f"/{args.database}.json")
        description.raise_for_status()
    except httpx.HTTPError as ex:
        parser.error(f"cannot read {base}/{args.database}.json: {ex}")
    site = hostile_requests.Site.from_database_json(description.json())
    time_limit = args.time_limit or client.get("/-/settings.json").json()["sql_time_limit_ms"] / 1000
    kinds = {name: KINDS[name](site) for name in (args.kind or sorted(KINDS))}

    statuses, by_kind, timings, found = Counter(), defaultdict(Counter), [], []

    @hypothesis_seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data):
        kind = data.draw(st.sampled_from(sorted(kinds)))
        path = data.draw(kinds[kind])
        started = time.perf_counter()
        try:
            response = client.get(path)
        except httpx.HTTPError as ex:
            found.append((kind, path, "no answer", [f"{type(ex).__name__}: {ex}"]))
            statuses["no answer"] += 1
            return
        elapsed = time.perf_counter() - started
        statuses[response.status_code] += 1
        by_kind[kind][response.status_code // 100 * 100] += 1
        timings.append((elapsed, response.status_code, kind, path))
        problems = hostile_requests.problems(path, response.status_code, response.headers.get("content-type"),
                                             response.text, elapsed, time_limit, args.margin)
        if problems:
            found.append((kind, path, response.status_code, problems))
        if len(timings) % 100 == 0:
            print(f"  {len(timings)} requests, {len(found)} problems", file=sys.stderr)

    started = time.perf_counter()
    fuzz()
    total = time.perf_counter() - started
    print(f"{len(timings)} requests to {base} in {total:.0f}s (seed {args.seed}, time limit {time_limit}s)")
    print("statuses: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str)))
    for kind in sorted(by_kind):
        print(f"  {kind:9} " + ", ".join(f"{status // 100}xx: {n}" for status, n in sorted(by_kind[kind].items())))
    if timings:
        ordered = sorted(t for t, *_ in timings)
        print(f"time: median {ordered[len(ordered) // 2] * 1000:.0f} ms, 99th percentile "
              f"{ordered[int(len(ordered) * 0.99)] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms")
    print(f"slowest {min(args.slowest, len(timings))}:")
    for elapsed, status, kind, path in sorted(timings, reverse=True)[: args.slowest]:
        print(f"  {elapsed * 1000:7.0f} ms  {status}  {kind:9} {path[:160]}")
    print(f"problems: {len(found)}")
    for kind, path, status, problems in found:
        print(f"  {status}  {kind:9} {path[:200]}\n      " + "; ".join(problems))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
