#!/usr/bin/env python
"""usage: scripts/bench_load.py DB [--inspect-file F] [--duration S] [--clients N] [--max-requests N]
       [--servers ours,plain,capped,before] [--before PYTHON] [--seed N] [--warmup S] [--timeout S] [--memory-cap SIZE] [--json-out FILE]

Load benchmark: C concurrent clients for S seconds of mixed, realistic traffic
(searches across the word-frequency range, HTML and JSON, with filters, second
pages through the real `next` token, galleries; table, row and database pages;
canned queries; the JSON API; the home and statistics pages) against a local
server on a database built by `datasette laion build` (12,096,835 rows for the
README figures). One server at a time, each started as it is deployed: ours
(`datasette laion serve`), plain Datasette 0.65 (no plugin; its own virtualenv,
/tmp/laion-plain-venv, created with `pip install datasette==0.65.5` when
missing; same file, inspect file and settings) and ours again with its memory
capped by a cgroup (`capped`). The mix is seeded and the same for every
server. Prints throughput, p50/p95/p99, errors by status, the server's peak
RSS and CPU, per kind of request, and the project's targets with PASS/FAIL.
Loopback only; bounded in time (--duration) and count (--max-requests); every
request has a timeout, counted as an error.
"""
import argparse
import asyncio
import collections
import contextlib
import ipaddress
import itertools
import json
import os
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import yaml

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore tries `import sniffio` on every request; without it each miss
    # searches sys.path again (a tenth of this client's CPU): make the miss cheap.
    sys.modules["sniffio"] = None

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchlib import ensure_plain_venv, free_port, pct  # noqa: E402 (scripts/ is on sys.path)

from datasette_laion import functions, site, site_metadata  # noqa: E402

DB = site.DATABASE_NAME
SERVERS = ("ours", "plain", "capped", "before")

# The project's targets for its own server (the issue).
TARGET_P95_MS = 300
TARGET_RSS_MB = 512

# Frequency bands of search terms: documents matching, nearest first; None is
# the most common words.
BANDS = [("~5", 5), ("~100", 100), ("~1k", 1_000), ("~10k", 10_000), ("~150k", 150_000),
         ("~1.4M", 1_400_000), ("top", None)]
TERMS_PER_BAND = 25
# Within a band, a term's popularity falls as 1/rank (Zipf): a few searches
# are asked often, most rarely, as on a real site.
ZIPF = [1 / (rank + 1) for rank in range(TERMS_PER_BAND)]
# Bands whose first page always has a next page (even filtered): page 2 comes from these.
PAGED_BANDS = ("~10k", "~150k", "~1.4M", "top")
SEARCH_FILTERS = ["aesthetic__gte=6.5&punsafe__lt=0.5", "aesthetic__gte=7", "punsafe__lt=0.5&pwatermark__lte=0.8"]
NAME_TABLES = ("artists", "celebrities", "characters")
# Longer than a run (120 s at up to 500 req/s): no request is a replay of
# the list, so a cache sees only the repeats the traffic itself has.
MIX_SIZE = 60_000

# Canned queries that call the plugin's SQL functions: plain Datasette gets the
# same SQL with each call replaced by plain SQL doing the same work (url_hash
# comes in as a parameter, computed by this script as the plugin does).
PLAIN_SQL = [
    ("coalesce(domain(:domain), lower(trim(:domain)))", "lower(trim(:domain))"),
    ("fts_phrase(:name)", "'\"' || replace(:name, '\"', '\"\"') || '\"'"),
    ("search_url(name)", f"'/{DB}/images?_search=' || '\"' || replace(name, '\"', '\"\"') || '\"'"),
    ("url_hash(:url)", ":url_hash"),
]
PLUGIN_FUNCTIONS = re.compile(r"\b(domain|registered_domain|fts_phrase|url_hash|search_url)\s*\(")


# ---------------------------------------------------------------- pure helpers


def parse_size(text):
    """'512M', '1G', '536870912' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (use 512M, 1G or a number of bytes)")
    return int(float(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " "))


def is_loopback(url):
    """True when ``url`` points at this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_param(url, name, value):
    """``url`` with query parameter ``name`` set to ``value`` (replaced if there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, str(value)))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def json_twin(path):
    """The JSON URL of an HTML page: /db/table?x -> /db/table.json?x."""
    parts = urlsplit(path)
    if parts.path.endswith(".json"):
        return path
    return urlunsplit(parts._replace(path=parts.path + ".json"))


def outcome(status=None, error=None):
    """None for a success, else the error's label: '500', 'timeout', 'ConnectError'.

    Every request of the mix is a valid one, so any status but 2xx/3xx is an error."""
    if error is not None:
        return error
    return None if 200 <= status < 400 else str(status)


def log_uniform_id(rng, count):
    """An id in 1..count, log-uniform: as many draws among the top 10 as among
    10..100 (ranked tables such as domain, where id 1 has the most images)."""
    return max(1, min(count, int(count ** rng.random())))


def plain_metadata(metadata):
    """The metadata plain Datasette gets: only the canned queries, plugin SQL
    functions replaced by plain SQL. Returns (metadata, names of queries left out)."""
    queries, dropped = {}, []
    for name, query in (metadata["databases"][DB].get("queries") or {}).items():
        sql = query["sql"]
        for old, new in PLAIN_SQL:
            sql = sql.replace(old, new)
        if PLUGIN_FUNCTIONS.search(sql):
            dropped.append(name)
            continue
        queries[name] = {**query, "sql": sql}
    return {"title": metadata.get("title"), "databases": {DB: {"queries": queries}}}, dropped


Req = collections.namedtuple("Req", "kind group path plain follow")
Req.__doc__ = """One request of the mix: ``path`` for ours; ``plain`` for plain
Datasette (the same path, its equivalent, or None when it has no such page);
``follow``: request the page that the `next` token of ``path``'s JSON leads to."""


def _q(value):
    return quote(str(value), safe="")


def _search(rng, cat, bands=None):
    band = rng.choice(bands or [b for b, _ in BANDS])
    terms = cat["terms"][band]
    return band, rng.choices(terms, weights=ZIPF[:len(terms)])[0]


def _same(kind, group, path, follow=False):
    return Req(kind, group, path, path, follow)


def _k_search_html(rng, cat):
    band, term = _search(rng, cat)
    return _same("search html", band, f"/{DB}/images?_search={_q(term)}")


def _k_search_json(rng, cat):
    band, term = _search(rng, cat)
    shape = rng.choice(["", "&_shape=objects", "&_shape=array", "&_size=10"])
    return _same("search json", band, f"/{DB}/images.json?_search={_q(term)}{shape}")


def _k_search_filtered(rng, cat):
    band, term = _search(rng, cat)
    fmt = rng.choice(["", "", ".json"])
    return _same("search +filters", band, f"/{DB}/images{fmt}?_search={_q(term)}&{rng.choice(SEARCH_FILTERS)}")


def _k_search_page2(rng, cat):
    band, term = _search(rng, cat, PAGED_BANDS)
    fmt = rng.choice(["", "", ".json"])
    extra = rng.choice(["", "", f"&{SEARCH_FILTERS[0]}"])
    return _same("search page 2", band, f"/{DB}/images{fmt}?_search={_q(term)}{extra}", follow=True)


def _k_search_phrase(rng, cat):
    name = rng.choice([n for n in cat["names"] if '"' not in n])
    return _same("search phrase", "names (phrase)", f"/{DB}/images?_search={_q(chr(34) + name + chr(34))}")


def _k_search_words(rng, cat):
    _, first = _search(rng, cat, ["~150k", "~1.4M", "top"])
    _, second = _search(rng, cat, ["~1k", "~10k", "~150k"])
    return _same("search 2 words", "2 words", f"/{DB}/images?_search={_q(first + ' ' + second)}")


def _k_gallery_search(rng, cat):
    band, term = _search(rng, cat)
    return _same("gallery search", band, f"/{DB}/images?_search={_q(term)}&_view=gallery")


def _k_gallery_browse(rng, cat):
    extra = rng.choice(["", "&aesthetic__gte=7", f"&domain_id={log_uniform_id(rng, 100)}"])
    return _same("gallery browse", "", f"/{DB}/images?_view=gallery{extra}")


def _k_table_images(rng, cat):
    extra = rng.choice(["", "", "?aesthetic__gte=7", "?punsafe__lt=0.5", "?_sort=punsafe"])
    return _same("table images", "", f"/{DB}/images{extra}")


def _k_table_counts(rng, cat):
    table = rng.choice(["domain", "domain", "registered_domain", *NAME_TABLES])
    return _same("table counts", table, f"/{DB}/{table}?_sort_desc=image_counts")


def _k_row_images(rng, cat):
    return _same("row images", "", f"/{DB}/images/{rng.randint(1, cat['counts']['images'])}")


def _k_row_domain(rng, cat):
    table = rng.choice(["domain", "domain", "registered_domain"])
    return _same("row domain", table, f"/{DB}/{table}/{log_uniform_id(rng, cat['counts'][table])}")


def _k_json_api(rng, cat):
    path = rng.choice([
        f"/{DB}/images.json?_shape=array&_size=10",
        f"/{DB}/images.json?_shape=objects&aesthetic__gte=7&_size=20",
        f"/{DB}/domain.json?_shape=array&_sort_desc=image_counts&_size=20",
        f"/{DB}/registered_domain.json?_shape=objects&_sort_desc=image_counts",
        f"/{DB}/{rng.choice(NAME_TABLES)}.json?_shape=array&_sort_desc=image_counts&_size=100",
        f"/{DB}/images/{rng.randint(1, cat['counts']['images'])}.json?_shape=objects",
        f"/{DB}/domain/{log_uniform_id(rng, cat['counts']['domain'])}.json",
    ])
    return _same("json api", "", path)


def _k_canned_list(rng, cat):
    name = rng.choice(["figures", "top_domains", "top_registered_domains", "artist_counts", "celebrity_counts",
                       "character_counts"])
    return _same("canned list", name, f"/{DB}/{name}{rng.choice(['', '', '.json'])}")


def _k_canned_lookup(rng, cat):
    fmt = rng.choice(["", ".json"])
    if rng.random() < 0.5:
        host = rng.choice(cat["hosts"])
        value = host if rng.random() < 0.6 else f"https://{host}/images/{rng.randint(1, 10**6)}.jpg"
        return Req("canned lookup", "domain_lookup", f"/{DB}/domain_lookup{fmt}?domain={_q(value)}",
                   f"/{DB}/domain_lookup{fmt}?domain={_q(host)}", False)
    url = rng.choice(cat["urls"]) if rng.random() < 0.8 else f"https://no.such.example/{rng.randint(1, 10**6)}.jpg"
    path = f"/{DB}/image_by_url{fmt}?url={_q(url)}"
    return Req("canned lookup", "image_by_url", path, path + f"&url_hash={functions.url_hash(url)}", False)


def _k_canned_images(rng, cat):
    fmt = rng.choice(["", "", ".json"])
    if rng.random() < 0.5:
        return _same("canned images", "images_for_name",
                     f"/{DB}/images_for_name{fmt}?name={_q(rng.choice(cat['names']))}")
    host = rng.choice(cat["hosts"])
    return _same("canned images", "images_from_domain", f"/{DB}/images_from_domain{fmt}?domain={_q(host)}")


def _k_home(rng, cat):
    return _same("home", "", "/")


def _k_database(rng, cat):
    return _same("database page", "", rng.choice([f"/{DB}", f"/{DB}", f"/{DB}.json"]))


def _k_stats(rng, cat):
    path = rng.choice(["/-/laion/stats", "/-/laion/stats", "/-/laion/stats.json"])
    return Req("laion stats", "", path, None, False)


def _k_mywork(rng, cat):
    q = rng.choice(cat["hosts"]) if rng.random() < 0.6 else rng.choice(cat["names"])
    return Req("laion mywork", "", f"/-/laion/mywork{rng.choice(['', '.json'])}?q={_q(q)}", None, False)


# (kind, weight in the mix, generator): searches about half the traffic.
KINDS = [
    ("search html", 12, _k_search_html),
    ("search json", 7, _k_search_json),
    ("search +filters", 6, _k_search_filtered),
    ("search page 2", 5, _k_search_page2),
    ("search phrase", 3, _k_search_phrase),
    ("search 2 words", 2, _k_search_words),
    ("gallery search", 5, _k_gallery_search),
    ("gallery browse", 2, _k_gallery_browse),
    ("table images", 4, _k_table_images),
    ("table counts", 6, _k_table_counts),
    ("row images", 6, _k_row_images),
    ("row domain", 2, _k_row_domain),
    ("json api", 6, _k_json_api),
    ("canned list", 4, _k_canned_list),
    ("canned lookup", 4, _k_canned_lookup),
    ("canned images", 4, _k_canned_images),
    ("home", 4, _k_home),
    ("database page", 1, _k_database),
    ("laion stats", 2, _k_stats),
    ("laion mywork", 2, _k_mywork),
]


def build_mix(catalog, seed, size=MIX_SIZE, kinds=KINDS):
    """``size`` requests drawn by weight from ``kinds``, seeded: the same
    catalog and seed give the same list."""
    rng = random.Random(seed)
    names, weights, makers = zip(*kinds)
    return [makers[names.index(kind)](rng, catalog) for kind in rng.choices(names, weights=weights, k=size)]


def describe_mix(mix):
    """[(kind, share %, distinct paths, plain: 'same'/'equivalent'/'none', an example path)], by share."""
    by_kind = collections.defaultdict(list)
    for req in mix:
        by_kind[req.kind].append(req)
    rows = []
    for kind, reqs in by_kind.items():
        if all(r.plain is None for r in reqs):
            plain = "none"
        elif all(r.plain == r.path for r in reqs):
            plain = "same"
        else:
            plain = "equivalent"
        rows.append((kind, 100 * len(reqs) / len(mix), len({r.path for r in reqs}), plain, reqs[0].path))
    return sorted(rows, key=lambda r: -r[1])


def summarize(records, elapsed):
    """records: [(kind, group, outcome-or-None, ms, from the page cache)] -> figures of a run."""
    times = [r[3] for r in records]
    errors = collections.Counter(r[2] for r in records if r[2] is not None)
    return {
        "requests": len(records),
        "cached": 100 * sum(1 for r in records if r[4]) / len(records) if records else 0.0,
        "seconds": elapsed,
        "rps": len(records) / elapsed if elapsed else 0.0,
        "p50": pct(times, 50), "p95": pct(times, 95), "p99": pct(times, 99), "max": max(times, default=None),
        "errors": sum(errors.values()),
        "error_breakdown": dict(errors.most_common()),
    }


def by_key(records, key):
    """{key(record): summary} over records; key picks e.g. the kind."""
    groups = collections.defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return {k: summarize(v, 0) for k, v in groups.items()}


def tail_kinds(records, p=95):
    """{kind: share %} of the requests slower than the p-th percentile: who makes the tail."""
    cut = pct([r[3] for r in records], p)
    tail = [r[0] for r in records if cut is not None and r[3] > cut]
    return {k: 100 * n / len(tail) for k, n in collections.Counter(tail).most_common()}


def verdicts(ours, capped=None):
    """[(target, figure, PASS/FAIL)] for the project's server."""
    rows = []
    if ours:
        rows.append(("ours: 0 errors", f"{ours['errors']}", ours["errors"] == 0))
        rows.append((f"ours: p95 <= {TARGET_P95_MS} ms", f"{ours['p95']:.0f} ms", ours["p95"] <= TARGET_P95_MS))
        rss = ours["memory"]["peak_rss_mb"]
        rows.append((f"ours: peak RSS <= {TARGET_RSS_MB} MB", f"{rss:.0f} MB", rss <= TARGET_RSS_MB))
    if capped:
        ok = capped["errors"] == 0 and not capped.get("server_exit")
        rows.append((f"capped ({capped['cgroup']['limit_mb']:.0f} MB): 0 errors",
                     f"{capped['errors']}" + (f", server {capped['server_exit']}" if capped.get("server_exit") else ""),
                     ok))
    return [(name, figure, "PASS" if ok else "FAIL") for name, figure, ok in rows]


# ---------------------------------------------------------------- the database


def load_catalog(db_path, counts, seed):
    """What the mix draws from, from the database: search terms per frequency
    band (fts5vocab), names, hosts (log-uniform by rank) and image URLs."""
    rng = random.Random(seed)
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    conn.execute("create virtual table temp.vocab using fts5vocab(main, images_fts, row)")
    vocab = conn.execute("select term, doc from temp.vocab where length(term) > 2 and term glob '[a-z]*'").fetchall()
    terms, docs = {}, dict(vocab)
    for band, target in sorted(BANDS, key=lambda b: b[1] is not None):  # the most common words first
        left = [r for r in vocab if not any(r[0] in ts for ts in terms.values())]
        if target is None:
            picked = sorted(left, key=lambda r: -r[1])[:TERMS_PER_BAND]
        else:
            picked = sorted(left, key=lambda r: (abs(r[1] - target), r[0]))[:TERMS_PER_BAND]
        terms[band] = [t for t, _ in picked]
    terms = {band: terms[band] for band, _ in BANDS}
    names = [r[0] for t in NAME_TABLES for r in conn.execute(f"select name from [{t}] order by image_counts desc")]
    ids = sorted({log_uniform_id(rng, counts["domain"]) for _ in range(300)})
    hosts = [r[0] for r in conn.execute(f"select domain from domain where id in ({','.join(map(str, ids))}) "
                                        "and domain is not null order by id")]
    rowids = sorted({rng.randint(1, counts["images"]) for _ in range(300)})
    urls = [r[0] for r in conn.execute(f"select url from images where rowid in ({','.join(map(str, rowids))})")]
    conn.close()
    return {"terms": terms, "docs": {t: docs[t] for ts in terms.values() for t in ts}, "names": names,
            "hosts": hosts, "urls": urls, "counts": counts}


def sqlite_memory_settings(db_path):
    """SQLite's page cache and mmap defaults in this Python (the servers set neither)."""
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    cache, mmap = conn.execute("pragma cache_size").fetchone()[0], conn.execute("pragma mmap_size").fetchone()[0]
    conn.close()
    cache_mb = -cache / 1024 if cache < 0 else cache * 4096 / 2**20
    return {"cache_size": cache, "cache_mb_per_connection": cache_mb, "mmap_size": mmap,
            "sqlite_version": sqlite3.sqlite_version,
            "sql_threads": site.settings().get("num_sql_threads", 3)}


# ---------------------------------------------------------------- processes and memory


def process_tree(pid):
    """pid and its descendants."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def proc_status(pid):
    """{VmRSS, VmHWM, RssAnon, RssFile, RssShmem: kB} of a process, {} if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0])
    return fields


def proc_cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds():
    """CPU seconds all processes of the machine have used (busy time of all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def mapped_file_kb(pid, path):
    """kB of ``path`` mapped into ``pid`` (SQLite mmap), resident, from smaps."""
    resident, current = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    current = line.rstrip().endswith(str(path))
                elif current and line.startswith("Rss:"):
                    resident += int(line.split()[1])
    except OSError:
        pass
    return resident


class MemorySampler(threading.Thread):
    """Samples the server's process tree (and its cgroup, if any) every
    ``interval`` seconds; keeps the peaks."""

    def __init__(self, pid, cgroup=None, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.cgroup, self.interval = pid, cgroup, interval
        self.peak = collections.Counter()
        self.processes = 1
        self._done = threading.Event()

    def sample(self):
        pids = process_tree(self.pid)
        self.processes = max(self.processes, len(pids))
        total = collections.Counter()
        for p in pids:
            total.update(proc_status(p))
        for key, value in total.items():
            self.peak[key] = max(self.peak[key], value)
        if self.cgroup:
            self.peak["cgroup"] = max(self.peak["cgroup"], self.cgroup.usage())

    def run(self):
        while not self._done.wait(self.interval):
            self.sample()

    def stop(self):
        self._done.set()
        self.join()
        main = proc_status(self.pid)
        # the peak: the sampled sum over the tree, or the kernel's high-water
        # mark of the server process, whichever is larger
        peak_kb = max(self.peak["VmRSS"], main.get("VmHWM", 0))
        return {
            "peak_rss_mb": peak_kb / 1024,
            "peak_rss_anon_mb": self.peak["RssAnon"] / 1024,
            "peak_rss_file_mb": self.peak["RssFile"] / 1024,
            "vmhwm_mb": main.get("VmHWM", 0) / 1024,
            "rss_end_mb": main.get("VmRSS", 0) / 1024,
            "processes": self.processes,
        }


class MemoryCgroup:
    """A child of this process's own memory cgroup (v2, or v1's memory
    controller) with a memory limit; removed by close()."""

    def __init__(self, limit_bytes):
        self.limit = limit_bytes
        self.v2 = False
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            own[controllers] = path
        root = Path("/sys/fs/cgroup")
        if (root / "cgroup.controllers").exists() and "memory" in (root / "cgroup.controllers").read_text().split():
            self.v2, parent = True, root / own[""].lstrip("/")
        else:
            v1 = next((k for k in own if "memory" in k.split(",")), None)
            if v1 is None or not (root / "memory").is_dir():
                raise SystemExit("--servers capped needs a cgroup memory controller (v2 or v1), and there is none")
            parent = root / "memory" / own[v1].lstrip("/")
        self.path = parent / f"laion-bench-load-{os.getpid()}"
        try:
            if self.v2:
                (parent / "cgroup.subtree_control").write_text("+memory")
            self.path.mkdir()
            self._write("memory.max" if self.v2 else "memory.limit_in_bytes", str(limit_bytes))
            if self.v2:
                self._write("memory.swap.max", "0")
        except OSError as ex:
            raise SystemExit(f"cannot make a memory cgroup under {parent} ({ex}); run as root, "
                             "or leave `capped` out of --servers") from None

    def _write(self, name, value):
        (self.path / name).write_text(value)

    def _read(self, name):
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def wrap(self, command):
        """``command`` run inside the cgroup: a shell joins it, then execs the command."""
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *command]

    def usage(self):
        return int(self._read("memory.current" if self.v2 else "memory.usage_in_bytes") or 0)

    def stats(self):
        def kv(text):
            return {k: int(v) for k, v in (line.split() for line in text.splitlines() if len(line.split()) == 2)}

        stat = kv(self._read("memory.stat"))
        if self.v2:
            events = kv(self._read("memory.events"))
            peak = int(self._read("memory.peak") or 0)
            return {"limit_mb": self.limit / 2**20, "peak_mb": peak / 2**20, "oom_kill": events.get("oom_kill", 0),
                    "limit_hits": events.get("max", 0), "anon_mb": stat.get("anon", 0) / 2**20,
                    "file_mb": stat.get("file", 0) / 2**20, "version": 2}
        oom = kv(self._read("memory.oom_control"))
        return {"limit_mb": self.limit / 2**20,
                "peak_mb": int(self._read("memory.max_usage_in_bytes") or 0) / 2**20,
                "oom_kill": oom.get("oom_kill", 0), "limit_hits": int(self._read("memory.failcnt") or 0),
                "anon_mb": stat.get("total_rss", stat.get("rss", 0)) / 2**20,
                "file_mb": stat.get("total_cache", stat.get("cache", 0)) / 2**20, "version": 1}

    def close(self):
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"note: could not remove {self.path}", file=sys.stderr)


def start_server(command, port, log, cgroup=None):
    if cgroup:
        command = cgroup.wrap(command)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(base + "/-/versions.json", timeout=5).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            raise SystemExit(f"server did not start: {' '.join(command)}\n{log.read()[-2000:].decode(errors='replace')}")
        time.sleep(0.2)


def stop_server(process):
    """Stops the server; returns how it had ended by itself, or None if it was still running."""
    ended = process.poll()
    if ended is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return None
    return f"exited by itself with code {ended}" + (" (killed: out of memory?)" if ended == -9 else "")


# ---------------------------------------------------------------- traffic


async def resolve_pages(client, mix, server, concurrency=4):
    """{index in mix: URL} of the second pages for this server, following the
    `next` token of the first page's JSON; a first page that fails or has no
    next page is requested as it is (and counted then). Returns (pages, failed)."""
    firsts = {}
    for i, req in enumerate(mix):
        path = req.path if server != "plain" else req.plain
        if req.follow and path is not None:
            firsts[i] = path
    tokens, semaphore = {}, asyncio.Semaphore(concurrency)

    async def fetch(url):
        async with semaphore:
            try:
                response = await client.get(url)
                tokens[url] = response.json().get("next") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                tokens[url] = None

    await asyncio.gather(*(fetch(url) for url in {json_twin(p) for p in firsts.values()}))
    pages = {i: with_param(p, "_next", tokens[json_twin(p)]) if tokens[json_twin(p)] else p
             for i, p in firsts.items()}
    return pages, sum(1 for url, token in tokens.items() if not token)


async def run_traffic(clients, mix, server, resolved, seconds, max_requests, timeout, start=0):
    """One worker per client (each its own keep-alive connection), taking the
    mix in order from ``start`` (the same order for every server) until
    ``seconds`` pass or ``max_requests`` have been sent; returns (records,
    elapsed seconds, where the next run starts)."""
    records = []
    counter = itertools.count(start)
    issued = 0
    deadline = time.monotonic() + seconds

    async def worker(client):
        nonlocal issued
        while time.monotonic() < deadline and issued < max_requests:
            i = next(counter) % len(mix)
            req = mix[i]
            path = resolved.get(i) or (req.path if server != "plain" else req.plain)
            if path is None:  # a page plain Datasette does not have
                continue
            issued += 1
            start = time.perf_counter()
            cached = False
            try:
                response = await asyncio.wait_for(client.get(path), timeout)
                result = outcome(response.status_code)
                cached = response.headers.get("x-laion-cache") == "hit"
            except asyncio.TimeoutError:
                result = outcome(error="timeout")
            except httpx.TimeoutException:
                result = outcome(error="timeout")
            except httpx.HTTPError as ex:
                result = outcome(error=type(ex).__name__)
            records.append((req.kind, req.group, result, (time.perf_counter() - start) * 1000, cached))

    started = time.monotonic()
    await asyncio.gather(*(worker(client) for client in clients))
    return records, time.monotonic() - started, next(counter)


async def load(base, mix, server, options, server_cpu):
    """Second pages resolved, warm-up, then the measured run: (records,
    elapsed, client CPU seconds, server CPU seconds, unresolved first pages)."""
    if not is_loopback(base):
        raise SystemExit(f"refusing a non-loopback server: {base}")
    # One client (one connection) per simulated visitor: httpx's pool checks
    # every connection it holds on each request, so one shared pool of 32
    # costs the load generator ~40% more CPU on the cores the server uses.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(
            base_url=base, timeout=options.timeout, limits=limits, follow_redirects=True))
            for _ in range(options.clients)]
        resolved, unresolved = await resolve_pages(clients[0], mix, server)
        start = 0  # the measured run goes on from where the warm-up stopped: no request of it is a replay
        if options.warmup > 0:
            start = (await run_traffic(clients, mix, server, resolved, options.warmup, options.max_requests,
                                       options.timeout))[2]
        cpu, server_before, machine_before = resource.getrusage(resource.RUSAGE_SELF), server_cpu(), \
            machine_cpu_seconds()
        records, elapsed, end = await run_traffic(clients, mix, server, resolved, options.duration,
                                                  options.max_requests, options.timeout, start)
        after, server_after, machine_after = resource.getrusage(resource.RUSAGE_SELF), server_cpu(), \
            machine_cpu_seconds()
    client_cpu = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    server = server_after - server_before
    others = max(0.0, machine_after - machine_before - server - client_cpu)
    return records, elapsed, client_cpu, server, others, unresolved, end > len(mix)


def bench_server(name, command, port, mix, options, db_path):
    cgroup = MemoryCgroup(options.memory_cap) if name == "capped" else None
    try:
        with tempfile.TemporaryFile() as log:
            process, base = start_server(command, port, log, cgroup)
            sampler = MemorySampler(process.pid, cgroup)
            sampler.start()
            try:
                records, elapsed, client_cpu, server_cpu, others_cpu, unresolved, replayed = asyncio.run(
                    load(base, mix, name, options, lambda: proc_cpu_seconds(process_tree(process.pid))))
                db_mapped = mapped_file_kb(process.pid, Path(db_path).resolve()) / 1024
            finally:
                try:
                    memory = sampler.stop()
                    cgroup_stats = cgroup.stats() if cgroup else None  # while the server still runs
                finally:
                    exited = stop_server(process)
            log.seek(0)
            log_tail = log.read()[-2000:].decode(errors="replace")
    finally:
        if cgroup:
            cgroup.close()
    result = summarize(records, elapsed)
    result.update({
        "memory": {**memory, "db_mmap_resident_mb": db_mapped},
        "client_cpu_s": client_cpu, "server_cpu_s": server_cpu, "others_cpu_s": others_cpu,
        "cores": os.cpu_count(), "server_exit": exited,
        "unresolved_second_pages": unresolved,
        "mix_replayed": replayed,
        "kinds": by_key(records, lambda r: r[0]),
        "slowest_5pct": tail_kinds(records),
        "search_bands": by_key([r for r in records if r[0].startswith(("search", "gallery search"))],
                               lambda r: r[1]),
    })
    if cgroup:
        result["cgroup"] = cgroup_stats
    if exited:
        result["server_log_tail"] = log_tail
    return result


# ---------------------------------------------------------------- output


def fmt_ms(value, width=8):
    return f"{'-':>{width}}" if value is None else f"{value:{width}.1f}"


def print_report(results, mix, options, catalog, memory_settings, plain_dropped):
    servers = list(results)
    print(f"\nLoad benchmark (scripts/bench_load.py): {options.clients} clients, {options.duration:g} s per server "
          f"after {options.warmup:g} s of warm-up, seed {options.seed}, {catalog['counts']['images']:,} rows")
    print(f"{'server':17}{'requests':>9}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}{'errors':>8}"
          f"{'peak RSS MB':>13}{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}")
    for name in servers:
        r = results[name]
        label = name if name != "capped" else f"ours capped {r['cgroup']['limit_mb']:.0f}M"
        cpu = f"{r['server_cpu_s']:.0f}s {100 * r['server_cpu_s'] / r['seconds']:.0f}%"
        ccpu = f"{r['client_cpu_s']:.0f}s {100 * r['client_cpu_s'] / r['seconds']:.0f}%"
        ocpu = f"{r['others_cpu_s']:.0f}s {100 * r['others_cpu_s'] / r['seconds']:.0f}%"
        print(f"{label:17}{r['requests']:9d}{r['rps']:8.1f}{fmt_ms(r['p50'])}{fmt_ms(r['p95'])}{fmt_ms(r['p99'])}"
              f"{fmt_ms(r['max'], 9)}{r['errors']:8d}{r['memory']['peak_rss_mb']:13.0f}{cpu:>12}{ccpu:>12}{ocpu:>11}")
    print(f"(ms; CPU: seconds, and % of one core, over the measured run, of {os.cpu_count()} cores; other CPU: "
          "every other process of the machine)")
    print("answered from the page cache (x-laion-cache: hit): " + ", ".join(
        f"{name} {results[name]['cached']:.1f}%" for name in servers))
    replayed = [name for name in servers if results[name].get("mix_replayed")]
    if replayed:
        print(f"NOTE: {', '.join(replayed)}: the run outlasted the {len(mix):,}-request mix, whose first requests "
              "were sent again (caches see those as repeats)")
    print("\nerrors by status:")
    for name in servers:
        r = results[name]
        breakdown = ", ".join(f"{k} x{v}" for k, v in r["error_breakdown"].items()) or "none"
        print(f"  {name:8} {breakdown}" + (f"; server {r['server_exit']}" if r["server_exit"] else ""))
        if r["unresolved_second_pages"]:
            print(f"  {'':8} {r['unresolved_second_pages']} first pages of the second-page searches gave no "
                  "`next` (their second pages requested as first pages)")
    print("\nmemory (peak over the run, warm-up included; process tree):")
    for name in servers:
        m = results[name]["memory"]
        line = (f"  {name:8} RSS {m['peak_rss_mb']:.0f} MB (anon {m['peak_rss_anon_mb']:.0f}, file "
                f"{m['peak_rss_file_mb']:.0f}; VmHWM {m['vmhwm_mb']:.0f}, at the end {m['rss_end_mb']:.0f}), "
                f"database file mapped: {m['db_mmap_resident_mb']:.0f} MB, processes: {m['processes']}")
        print(line)
        if "cgroup" in results[name]:
            c = results[name]["cgroup"]
            print(f"  {'':8} cgroup v{c['version']}: limit {c['limit_mb']:.0f} MB, peak usage {c['peak_mb']:.0f} MB "
                  f"(page cache charged to it included), at the end anon {c['anon_mb']:.0f} MB + page cache "
                  f"{c['file_mb']:.0f} MB; limit reached {c['limit_hits']} times (reclaim), oom_kill {c['oom_kill']}")
    s = memory_settings
    print(f"  SQLite {s['sqlite_version']}: cache_size {s['cache_size']} ({s['cache_mb_per_connection']:.0f} MB of "
          f"page cache per connection, in anon RSS) x {s['sql_threads']} SQL threads' connections; mmap_size "
          f"{s['mmap_size']} (the file is read with pread into the OS page cache, outside RSS)")

    kinds = [row[0] for row in describe_mix(mix)]
    print("\nper kind of request, ms (p50 / p95 / errors):")
    header = f"{'kind':18}{'share':>6}"
    for name in servers:
        header += f"{name + ' p50':>14}{'p95':>8}{'err':>5}"
    print(header + f"{'cached':>8}{'of ' + servers[0] + ' slowest 5%':>26}")
    shares = {row[0]: row[1] for row in describe_mix(mix)}
    for kind in kinds:
        line = f"{kind:18}{shares[kind]:5.1f}%"
        for name in servers:
            k = results[name]["kinds"].get(kind)
            if k is None:
                line += f"{'(none)':>14}{'':8}{'':5}"
            else:
                line += f"{fmt_ms(k['p50'], 14)}{fmt_ms(k['p95'])}{k['errors']:5d}"
        first = results[servers[0]]["kinds"].get(kind)
        line += f"{first['cached']:7.0f}%" if first else f"{'':8}"
        tail = results[servers[0]]["slowest_5pct"].get(kind)
        print(line + (f"{tail:25.1f}%" if tail else ""))
    print("\nsearches by frequency band (searches and gallery searches), ms (p50 / p95 / errors):")
    bands = [b for b, _ in BANDS] + sorted({g for n in servers for g in results[n]["search_bands"]}
                                           - {b for b, _ in BANDS})
    for band in bands:
        terms = ", ".join(f"{t} ({catalog['docs'][t]:,})" for t in catalog["terms"].get(band, [])[:5])
        line = f"{band:18}"
        for name in servers:
            k = results[name]["search_bands"].get(band)
            line += (f"{'(none)':>14}{'':13}" if k is None else
                     f"{fmt_ms(k['p50'], 14)}{fmt_ms(k['p95'])}{k['errors']:5d}")
        print(line + (f"   {terms}" if terms else ""))

    print("\nplain Datasette: same URLs; the canned queries through the same SQL with the plugin's functions "
          "replaced by plain SQL (image_by_url gets url_hash as a parameter, domain_lookup a host); "
          "no table metadata (no sort_desc, no facets); `_view=gallery` ignored (a table page); "
          "/-/laion/* skipped (ours only)" + (f"; canned queries left out: {', '.join(plain_dropped)}"
                                              if plain_dropped else ""))
    table = verdicts(results.get("ours"), results.get("capped"))
    if table:
        print("\ntargets:")
        for name, figure, verdict in table:
            print(f"  {name:34}{figure:>22}  {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("db", type=Path)
    parser.add_argument("--inspect-file", type=Path)
    parser.add_argument("--duration", type=float, default=120, help="seconds of measured traffic per server")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=500_000, help="stop a run after this many requests")
    parser.add_argument("--servers", default="ours,plain,capped", help="any of ours, plain, capped, before, in order")
    parser.add_argument("--before", type=Path, help="`before`: the Python of a virtualenv with the code before a "
                        "change installed (e.g. a git worktree of the previous commit, pip install -e)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=10, help="seconds of traffic before each run, not counted")
    parser.add_argument("--timeout", type=float, default=30, help="seconds a request may take; more is an error")
    parser.add_argument("--memory-cap", type=parse_size, default=parse_size("512M"), help="for `capped`")
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    options = parser.parse_args()
    servers = [s.strip() for s in options.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown or not servers:
        parser.error(f"--servers: any of {', '.join(SERVERS)}")
    if "before" in servers and not options.before:
        parser.error("--servers before needs --before PYTHON")
    if options.duration <= 0 or options.clients < 1 or options.max_requests < 1:
        parser.error("--duration, --clients and --max-requests must be positive")
    inspect_file = options.inspect_file or options.db.parent / "inspect.json"
    counts = {t: v["count"] for t, v in json.loads(inspect_file.read_text())[DB]["tables"].items()}

    catalog = load_catalog(options.db, counts, options.seed)
    mix = build_mix(catalog, options.seed)
    print(f"traffic mix: {len(mix):,} requests, seed {options.seed}, taken in order by all clients (warm-up first, "
          "then the measured run; replayed from the start only if a run outlasts it)")
    print(f"{'kind':18}{'share':>7}{'distinct':>10}  {'plain':11}example")
    for kind, share, distinct, plain, example in describe_mix(mix):
        print(f"{kind:18}{share:6.1f}%{distinct:10d}  {plain:11}{example[:90]}")
    print(f"search terms ({TERMS_PER_BAND} per band, popularity 1/rank; the first 5): " + "; ".join(
        f"{band}: " + ", ".join(f"{t} ({catalog['docs'][t]:,})" for t in ts[:5]) for band, ts in catalog["terms"].items()))

    settings = site.setting_args()
    workdir = tempfile.TemporaryDirectory()
    plain_meta, plain_dropped = plain_metadata(site_metadata.for_file(options.db, DB))  # what the plugin adds
    plain_meta_path = Path(workdir.name) / "plain-metadata.yml"
    plain_meta_path.write_text(yaml.safe_dump(plain_meta, sort_keys=False))
    results = {}
    for name in servers:
        port = free_port()
        if name == "plain":
            command = [str(ensure_plain_venv()), "serve", "-i", str(options.db), "--inspect-file", str(inspect_file),
                       "-m", str(plain_meta_path), "-h", "127.0.0.1", "-p", str(port)] + settings
        else:
            python = options.before if name == "before" else sys.executable
            command = [str(python), "-m", "datasette_laion", "serve", str(options.db), "--inspect-file",
                       str(inspect_file), "-h", "127.0.0.1", "-p", str(port)]
        print(f"\n{name}: {' '.join(command[:4])} ... (warm-up {options.warmup:g} s, run {options.duration:g} s)",
              flush=True)
        results[name] = bench_server(name, command, port, mix, options, options.db)
        r = results[name]
        print(f"  {r['requests']} requests, {r['rps']:.1f} req/s, p95 {fmt_ms(r['p95'], 0)} ms, "
              f"errors {r['errors']}, peak RSS {r['memory']['peak_rss_mb']:.0f} MB", flush=True)
    workdir.cleanup()

    memory_settings = sqlite_memory_settings(options.db)
    print_report(results, mix, options, catalog, memory_settings, plain_dropped)
    if options.json_out:
        options.json_out.write_text(json.dumps({
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
            "mix": [{"kind": k, "share": s, "distinct": d, "plain": p, "example": e}
                    for k, s, d, p, e in describe_mix(mix)],
            "terms": catalog["terms"], "term_docs": catalog["docs"],
            "sqlite": memory_settings, "plain_metadata_dropped": plain_dropped,
            "results": results,
            "targets": verdicts(results.get("ours"), results.get("capped")),
        }, indent=2, default=str))


if __name__ == "__main__":
    main()
