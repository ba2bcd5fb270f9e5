"""Build the LAION SQLite database from parquet files.

The build never touches the output path until the very end: it works in a
directory beside it (``.OUT.db.build-<pid>-xxxx``) and renames the finished
file over OUT in one step, so a failure at any point leaves the previous
database as it was. Steps:

1. check:     every input file's footer and columns, the names lists and the
              exclusion lists, before anything is written;
2. scan:      read the aesthetic column only, to cut the score range into
              buckets of at most ``sort_rows`` rows;
3. partition: stream every file once, drop excluded rows, compute domain ids
              (``functions.domain`` once per distinct URL authority) and spill
              each row to its score bucket as Arrow IPC;
4. load:      bucket by bucket, best first, sort in memory and insert into
              ``images`` with rowid = rank; the captions go at the same time to
              a thread that builds the identical full-text index in a side
              database, so tokenizing runs on the second core;
5. indexes, domain and names tables, then the full-text index is copied in;
6. finish:    statistics tables (stats.py; their figures come from the partition
              pass), inspect data (exact counts, sha256), rename into place.
"""
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import rowfilter, sql, stats
from .exclude import load_exclusions
from .functions import fts_phrase, registrable_domain
from .names import NamesError, load_names
from .partition import partition_part, read_bucket, release_memory, scan, share_row_groups
from .source import CORE_COLUMNS, SourceError, merged_extras, open_sources, source_info, source_profiles
from .version import __version__

DEFAULT_BATCH_SIZE = 50_000
DEFAULT_SORT_ROWS = 150_000
class BuildError(Exception):
    """A build that could not be done; OUT is unchanged."""


@dataclasses.dataclass
class BuildResult:
    path: Path
    inspect_path: Path
    database_name: str
    rows: int
    source_rows: int
    domains: int
    registered_domains: int
    rows_without_domain: int
    excluded: int
    exclusions: list
    names: dict
    size: int
    timings: dict
    notes: list
    profile: str = None  # the source profile(s) the files were read as
    filter: str = None  # the row filter ("aesthetic >= 6"), None: every row
    filtered: int = 0  # rows the filter left out


def database_name(path):
    """The name Datasette gives a database file: its file name without suffix."""
    return Path(path).stem


class _Steps:
    """Progress bars (tqdm, on stderr) and per-step wall times."""

    def __init__(self, progress):
        self.progress = progress
        self.timings = {}
        self.current = "check"

    def bar(self, desc, total, unit="rows"):
        from tqdm import tqdm

        return tqdm(
            total=total, desc=f"{desc:<15}", unit=unit, unit_scale=True, disable=not self.progress,
            file=sys.stderr, dynamic_ncols=True, mininterval=0.5, smoothing=0.1,
        )

    def timed(self, name):
        steps = self

        class _Timer:
            def __enter__(self):
                steps.current = name
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                steps.timings[name] = steps.timings.get(name, 0.0) + time.perf_counter() - self.start

        return _Timer()


def build_fts(spec, progress=None):
    """Build the full-text index of the captions in its own database file.

    Runs in a worker process, alongside the load, on the second core. It
    reads the same spilled buckets as the load and sorts them the same way, so
    rowid i here is rowid i in images. The index is contentless but otherwise
    identical to the external-content one the main database declares; the
    build copies its segments over.
    """
    batch_size = spec["batch_size"]
    conn = sqlite3.connect(spec["db"], isolation_level=None)
    try:
        conn.executescript(sql.BUILD_PRAGMAS)
        conn.executescript(sql.FTS_PRAGMAS)
        conn.execute(sql.CREATE_FTS_SIDE)
        # Merging segments as they are written would be redone by 'optimize';
        # a bigger in-memory hash (default 1 MB) writes fewer, larger segments.
        conn.execute("insert into images_fts(images_fts, rank) values ('automerge', 0)")
        conn.execute(f"insert into images_fts(images_fts, rank) values ('hashsize', {sql.FTS_HASH_SIZE})")
        conn.execute("begin")
        for parts, first in spec["buckets"]:
            texts = read_bucket(parts, ["text"]).column("text")
            pa.default_memory_pool().release_unused()
            for start in range(0, len(texts), batch_size):
                chunk = texts.slice(start, batch_size).to_pylist()
                conn.executemany(
                    "insert into images_fts (rowid, text) values (?, ?)",
                    zip(range(first + start, first + start + len(chunk)), chunk),
                )
                if progress:
                    progress(len(chunk))
        conn.execute("commit")
        # One segment: smaller, and every query reads a single b-tree.
        conn.execute("insert into images_fts(images_fts) values ('optimize')")
    finally:
        conn.close()
    return {}


WORKER_JOBS = {"partition": partition_part, "fts": build_fts}


class _Signals:
    """Ctrl-C (SIGINT) and SIGTERM during a build (``with``: from the main
    thread, as Python handles signals only there). They raise
    KeyboardInterrupt at once, as Python's own SIGINT handler does, except
    while ``held()``: where an exception at an arbitrary point could leave a
    lock taken (Popen's, a thread pool's, so that a later wait never ends) or
    a worker process unrecorded. There a signal is only noted, and raised as
    KeyboardInterrupt by ``check()``, at a safe point, or at the end of the
    (outermost) hold; with ``swallow``, dropped (the work it would have
    stopped is done, or being undone). Ignored signals stay ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.previous = {}
        self.holding = 0
        self.received = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                for signum in self.SIGNALS:
                    handler = signal.getsignal(signum)
                    if handler not in (signal.SIG_IGN, None):
                        self.previous[signum] = handler
                        signal.signal(signum, self._handle)
            except BaseException:  # a signal while they were being set
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum, frame):
        if not self.holding:
            raise KeyboardInterrupt
        self.received = signum

    @contextlib.contextmanager
    def held(self, swallow=False):
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding and self.received is not None:
            self.received = None
            if not swallow:
                raise KeyboardInterrupt

    def check(self):
        """Raise the signal noted while held, if any."""
        if self.received is not None:
            self.received = None
            raise KeyboardInterrupt


class _Worker:
    """A job of WORKER_JOBS in a child process (``python -m
    datasette_laion.worker JOB SPEC``): progress comes as ``progress N``
    lines on its stdout, the result as JSON in a file, an error as the last
    line of its stderr."""

    def __init__(self, job, spec, work, name):
        self.spec_path = work / f"{name}.spec.json"
        self.result_path = work / f"{name}.result.json"
        self.spec_path.write_text(json.dumps(spec))
        self.done = 0
        self.stderr = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datasette_laion.worker", job, str(self.spec_path), str(self.result_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.readers = [
            threading.Thread(target=self._read_progress, daemon=True),
            threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_progress(self):
        for line in self.process.stdout:
            if line.startswith("progress "):
                self.done = int(line.split()[1])

    def finished(self):
        return self.process.poll() is not None

    def result(self):
        self.process.wait()
        for reader in self.readers:
            reader.join(timeout=5)
        if self.process.returncode in (130, -signal.SIGINT, -signal.SIGTERM):  # stopped by a signal to all
            raise KeyboardInterrupt
        if self.process.returncode != 0:
            lines = [line.rstrip() for line in self.stderr if line.strip()]
            raise BuildError(lines[-1] if lines else f"worker ended with exit code {self.process.returncode}")
        return json.loads(self.result_path.read_text())

    def stop(self):
        """Terminate the process, kill it if it lingers; every wait bounded."""
        for end in (self.process.terminate, self.process.kill):
            if self.process.poll() is not None:
                return
            end()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def _wait_all(workers, bar, check):
    """Wait for workers, updating ``bar`` with their summed progress;
    ``check()`` raises a signal held meanwhile (_Signals)."""
    while not all(w.finished() for w in workers):
        time.sleep(0.25)
        check()
        bar.n = sum(w.done for w in workers)
        bar.refresh()
    results = [w.result() for w in workers]
    bar.n = sum(w.done for w in workers)
    bar.refresh()
    return results


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_work_dirs(out):
    """Work directories left by builds that were killed (SIGKILL, power loss)."""
    for path in out.parent.glob(f".{out.name}.build-*"):
        try:
            pid = int(path.name.split(".build-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def build(
    out,
    inputs,
    names_dir=None,
    exclude=(),
    inspect_file=None,
    batch_size=DEFAULT_BATCH_SIZE,
    sort_rows=DEFAULT_SORT_ROWS,
    progress=True,
    workers=None,
    profile=None,
    min_aesthetic=None,
    max_punsafe=None,
):
    """Build ``out`` from parquet ``inputs`` (files or directories); see the
    module docstring. ``workers``: processes that read the parquet files
    (default: 2, or 1 on one core). ``profile``: the name of the source
    profile (profiles.py) to read the files as (default: found from their
    columns). ``min_aesthetic``, ``max_punsafe``: load only the rows with
    aesthetic >= / punsafe <= the value (rowfilter.py). Returns a
    BuildResult; raises BuildError (OUT unchanged)."""
    builder = _Builder(out, inspect_file, batch_size, sort_rows, progress, workers)
    return builder.run(inputs, names_dir, exclude, profile, (min_aesthetic, max_punsafe))


class _Builder:
    def __init__(self, out, inspect_file, batch_size, sort_rows, progress, workers=None):
        self.started = time.perf_counter()
        self.out = Path(out)
        self.inspect_path = Path(inspect_file) if inspect_file else self.out.parent / "inspect.json"
        if batch_size < 1 or sort_rows < 1:
            raise BuildError("--batch-size must be at least 1")
        if self.out.is_dir():
            raise BuildError(f"{self.out} is a directory; give the path of the database file to write")
        if not self.out.parent.is_dir():
            raise BuildError(f"{self.out.parent} does not exist; create it first")
        if not self.inspect_path.parent.is_dir():
            raise BuildError(f"{self.inspect_path.parent} does not exist; create it first")
        self.batch_size = batch_size
        self.sort_rows = sort_rows
        self.steps = _Steps(progress)
        self.notes = []
        self.work = None
        self.conn = None
        self.fts = None
        self.running = []
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self.inspect_tmp = None
        self.checksums = None
        self.signals = _Signals()

    def run(self, inputs, names_dir, exclude, profile=None, limits=(None, None)):
        with self.signals:
            return self._run(inputs, names_dir, exclude, profile, limits)

    def _run(self, inputs, names_dir, exclude, profile, limits):
        with self.steps.timed("check"):
            self.check(inputs, names_dir, exclude, profile, limits)
        _remove_stale_work_dirs(self.out)
        self.work = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.build-{os.getpid()}-"))
        self.db_path = self.work / "build.db"
        try:
            with self.steps.timed("scan"):
                cuts = self.scan()
            with self.steps.timed("partition"):
                results, buckets = self.partition(cuts)
                # The full-text index needs only the buckets: it starts now,
                # while the domains are ranked here.
                with self.signals.held():
                    self.fts = _Worker(
                        "fts", {"db": str(self.work / "fts.db"), "buckets": buckets, "batch_size": self.batch_size},
                        self.work, "fts",
                    )
                    self.running = [self.fts]
                self.rank_domains(results)
                del results
            with self.steps.timed("load"):
                self.load(buckets)
            with self.steps.timed("indexes"):
                self.create_indexes()
                self.write_info_tables()
            with self.steps.timed("full-text index"):
                self.copy_fts()
            with self.steps.timed("names"):
                self.count_names()
            with self.steps.timed("finish"):
                self.finish()
            self.steps.timings["total"] = time.perf_counter() - self.started
            return self.result()
        except SourceError as ex:
            raise BuildError(str(ex)) from None
        except BuildError as ex:  # from a worker process
            raise BuildError(self._explain(str(ex))) from None
        except (sqlite3.Error, OSError, pa.ArrowException) as ex:
            raise BuildError(self._explain(f"{type(ex).__name__}: {ex}")) from None
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as ex:  # a bug: still a clear message, and OUT untouched
            raise BuildError(
                f"unexpected {type(ex).__name__} in the {self.steps.current} step: {ex} "
                "(please report this, with the command you ran)"
            ) from None
        finally:
            self.cleanup()

    def _explain(self, message):
        """A full disk says which folders, and how much room they have now."""
        lowered = message.lower()
        if not any(s in lowered for s in ("no space left", "disk is full", "errno 28")):
            return message
        places = {}
        places.setdefault(self.out.parent.resolve(), "the database's folder")
        places.setdefault(self.inspect_path.parent.resolve(), "the inspect file's folder")
        places.setdefault(Path(_sqlite_temp_dir()).resolve(), "SQLite's sort files, TMPDIR")
        free = []
        for place, role in places.items():
            try:
                room = shutil.disk_usage(place).free
            except OSError:
                continue
            free.append(f"{place} ({role}) has {room / 1e6:,.0f} MB free")
        return (
            f"{message}\nThe disk is full: " + "; ".join(free) + ". Free some space: a build needs about "
            "twice the database's size free in the database's folder, and some in TMPDIR for sorting"
        )

    def cleanup(self):
        # Whole, even if Ctrl-C is pressed again: a signal is dropped here.
        with self.signals.held(swallow=True):
            for worker in self.running:
                worker.stop()
            if self.checksums is not None:
                self.checksums.stop()
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if self.inspect_tmp is not None:
                Path(self.inspect_tmp).unlink(missing_ok=True)
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)

    # 1. check: everything is read and validated before anything is written.
    def check(self, inputs, names_dir, exclude, profile, limits):
        try:
            self.conditions = rowfilter.conditions(*limits)
            self.sources = open_sources(inputs, profile)
            rowfilter.check(self.conditions, self.sources)
            self.names, name_notes = load_names(names_dir)
            self.exclusions = load_exclusions(exclude)
        except (SourceError, NamesError) as ex:
            raise BuildError(str(ex)) from None
        self.notes.extend(name_notes)
        self.profiles = source_profiles(self.sources)
        self.best_first = self.profiles[0].best_first  # the same for all (open_sources)
        self.extras = merged_extras(self.sources)
        self.source_rows = sum(s.num_rows for s in self.sources)
        self.checksums = stats.Checksums([s.path for s in self.sources])  # on a thread, meanwhile

    # 2. scan: the sort key of every row kept, to cut the sort into buckets.
    def scan(self):
        if self.source_rows <= self.sort_rows:
            return np.zeros(0)
        with self.steps.bar("scan scores", self.source_rows) as bar:
            return scan(self.sources, self.best_first, self.conditions, self.sort_rows, bar.update)

    # 3. partition: exclusions, domains, spill rows to their score bucket,
    #    in worker processes that share out the row groups of every file.
    def partition(self, cuts):
        shares = share_row_groups(self.sources, self.workers)
        base = {
            "work": str(self.work), "cuts": cuts.tolist(), "extras": self.extras,
            "exclude": [str(e.path) for e in self.exclusions.lists], "batch_size": self.batch_size,
            "best_first": self.best_first,
            "conditions": [dataclasses.asdict(c) for c in self.conditions],
        }
        with self.steps.bar("read parquet", self.source_rows) as bar:
            if len(shares) == 1 and self.workers == 1:
                results = [partition_part({**base, "worker": 0, "tasks": shares[0]}, bar.update)]
            else:
                # Held while workers start and are waited for: each is on
                # the list that cleanup stops, and no Popen lock is left taken.
                with self.signals.held():
                    self.running = []
                    for k, tasks in enumerate(shares):
                        spec = {**base, "worker": k, "tasks": tasks}
                        self.running.append(_Worker("partition", spec, self.work, f"partition-{k}"))
                    results = _wait_all(self.running, bar, self.signals.check)
                    self.running = []
        # Totals, and the buckets in row order with the rowid each starts at.
        self.loaded_per_source = [0] * len(self.sources)
        for result in results:
            for source, count in result["loaded"].items():
                self.loaded_per_source[int(source)] += count
        self.excluded = sum(r["excluded"] for r in results)
        self.filtered = sum(r["filtered"] for r in results)
        self.null_text = sum(r["null_text"] for r in results)
        self.stats = stats.merge(r["stats"] for r in results)
        for i, exclusion in enumerate(self.exclusions.lists):
            exclusion.rows_excluded = sum(r["exclusions"][i] for r in results)
        self.rows = sum(self.loaded_per_source)
        buckets, first = [], 1
        for b in sorted({int(b) for r in results for b in r["sizes"]}):
            parts = [(str(self.work / f"bucket-{b:05d}-{k}.arrow"), k) for k, r in enumerate(results) if str(b) in r["sizes"]]
            buckets.append((parts, first))
            first += sum(r["sizes"].get(str(b), 0) for r in results)
        return results, buckets

    def rank_domains(self, results):
        """The domain and registered_domain rows, ranked by image count (most
        first), and each worker's domain ids mapped to the final ones."""
        counts = {}
        self.rows_without_domain = 0
        for result in results:
            self.rows_without_domain += result["counts"][0]
            for host, count in zip(result["hosts"][1:], result["counts"][1:]):
                counts[host] = counts.get(host, 0) + count
        ranked = sorted((item for item in counts.items() if item[1]), key=lambda item: (-item[1], item[0]))
        final = {host: i for i, (host, _) in enumerate(ranked, start=1)}
        # Registrable domains (pinimg.com for i.pinimg.com), ranked the same way.
        registered_of = {host: registrable_domain(host) for host, _ in ranked}
        by_registered = {}
        for host, count in ranked:
            registered = registered_of[host]
            if registered is not None:
                entry = by_registered.setdefault(registered, [0, 0])
                entry[0] += count
                entry[1] += 1
        ranked_registered = sorted(by_registered.items(), key=lambda item: (-item[1][0], item[0]))
        registered_ids = {name: i for i, (name, _) in enumerate(ranked_registered, start=1)}
        self.registered_rows = [(i, name, c, h) for i, (name, (c, h)) in enumerate(ranked_registered, start=1)]
        self.domain_rows = [
            (i, host, count, registered_ids.get(registered_of[host]))
            for i, (host, count) in enumerate(ranked, start=1)
        ]
        self.domain_remaps = [
            np.array([0] + [final.get(h, 0) for h in r["hosts"][1:]], dtype=np.int64) for r in results
        ]

    # 4. load: images in score order (the full-text index is built meanwhile).
    def load(self, buckets):
        self.conn = sqlite3.connect(self.db_path, isolation_level=None)
        self.conn.execute(f"pragma page_size = {sql.PAGE_SIZE}")
        self.conn.executescript(sql.BUILD_PRAGMAS)
        extra_sql = "".join(f",\n  [{name}] {kind.lower()}" for name, kind in self.extras.items())
        self.conn.execute(sql.CREATE_REGISTERED_DOMAIN)
        self.conn.execute(sql.CREATE_DOMAIN)
        self.conn.execute(sql.CREATE_IMAGES.format(extra_columns=extra_sql))
        # Rows arrive in this index's order, so keeping it up costs little.
        self.conn.execute(sql.CREATE_AESTHETIC_INDEX)
        columns = CORE_COLUMNS + list(self.extras) + ["url_hash", "domain_id"]
        insert = "insert into images (rowid, {}) values (?, {})".format(
            ", ".join(f"[{c}]" for c in columns), ", ".join("?" for _ in columns)
        )
        # The domain tables first: their rows can then leave memory.
        self.conn.execute("begin")
        self.conn.executemany(sql.INSERT_REGISTERED_DOMAIN, self.registered_rows)
        self.conn.executemany(sql.INSERT_DOMAIN, self.domain_rows)
        self.domain_count, self.registered_count = len(self.domain_rows), len(self.registered_rows)
        del self.domain_rows, self.registered_rows
        release_memory()
        # Held while the reader thread runs, raised between chunks: an
        # interrupt inside the thread pool's locks could leave it waiting for
        # ever, and the build with it.
        with self.signals.held(), self.steps.bar("load images", self.rows) as bar, ThreadPoolExecutor(1) as reader:
            # The next bucket is read and sorted (Arrow, without the GIL) on
            # a thread while this one is inserted.
            def read(bucket):
                return read_bucket(bucket[0], remaps=self.domain_remaps)

            pending = reader.submit(read, buckets[0]) if buckets else None
            for index, (_parts, first) in enumerate(buckets):
                table = pending.result()
                pending = reader.submit(read, buckets[index + 1]) if index + 1 < len(buckets) else None
                for start in range(0, table.num_rows, self.batch_size):
                    chunk = table.slice(start, self.batch_size)
                    values = [chunk.column(c).to_pylist() for c in columns[:-1]]
                    values.append([i or None for i in chunk.column("domain_id").to_pylist()])
                    rowid = first + start
                    self.conn.executemany(insert, zip(range(rowid, rowid + chunk.num_rows), *values))
                    bar.update(chunk.num_rows)
                    self.signals.check()
                del table
                release_memory(collect=False)
            self.conn.execute("commit")

    # 5. indexes, while the full-text index is finished on the other core.
    def create_indexes(self):
        self.conn.executescript(sql.INDEX_PRAGMAS)
        with self.steps.bar("indexes", len(sql.CREATE_INDEXES), unit="index") as bar:
            for _, statement in sql.CREATE_INDEXES:
                self.conn.execute(statement)
                bar.update(1)

    def write_info_tables(self):
        info = {
            "order": self.profiles[0].order,  # rowid 1 is the best; search relies on "aesthetic desc"
            "rows": self.rows,
            "source_rows": self.source_rows,
            "excluded_rows": self.excluded,
            "domains": self.domain_count,
            **source_info(self.sources, self.extras),
            "filter": rowfilter.describe(self.conditions),  # NULL: every row
            "filtered_rows": self.filtered,  # left out by the filter
        }
        _write_tables(self.conn, self.sources, self.loaded_per_source, self.exclusions, info)
        facts = {
            "registered_domains": self.registered_count,
            "rows_without_domain": self.rows_without_domain,
            "null_captions": self.null_text,
        }
        # Counted through the indexes: milliseconds even at 12M rows.
        for key, query in sql.BUILD_FIGURES.items():
            facts[key] = self.conn.execute(query).fetchone()[0]
        self.conn.executemany("insert into build_info (key, value) values (?, ?)", list(facts.items()))

    def copy_fts(self):
        with self.signals.held(), self.steps.bar("full-text index", self.rows) as bar:
            _wait_all([self.fts], bar, self.signals.check)
            self.running = []
        conn = self.conn
        conn.execute(sql.CREATE_FTS)
        conn.execute("attach database ? as side", [str(self.work / "fts.db")])
        conn.execute("begin")
        for table in sql.FTS_SHADOW_TABLES:
            conn.execute(f"delete from main.[{table}]")
            conn.execute(f"insert into main.[{table}] select * from side.[{table}]")
        conn.execute("commit")
        conn.execute("detach database side")
        (self.work / "fts.db").unlink()
        # The FTS5 module cached the empty index it created: start afresh.
        conn.close()
        self.conn = sqlite3.connect(self.db_path, isolation_level=None)
        self.conn.executescript(sql.BUILD_PRAGMAS)

    # Names: each one's image count, as an FTS5 phrase.
    def count_names(self):
        self.name_counts = {}
        total = sum(len(rows) for _, rows in self.names.values())
        conn = self.conn
        with self.steps.bar("name counts", total, unit="names") as bar:
            conn.execute("begin")
            for table, (fields, rows) in self.names.items():
                others = [f for f in fields if f and f not in ("name", "id", "image_counts")]
                conn.execute(sql.CREATE_NAMES.format(table=table, columns="".join(f"\n  [{f}] text," for f in others)))
                insert = "insert into [{}] (name{}, image_counts) values (?{}, ?)".format(
                    table, "".join(f", [{f}]" for f in others), "".join(", ?" for _ in others)
                )
                for row in rows:
                    count = conn.execute(sql.COUNT_PHRASE, [fts_phrase(row["name"])]).fetchone()[0]
                    conn.execute(insert, [row["name"]] + [row.get(f) for f in others] + [count])
                    bar.update(1)
                conn.execute(f"create index [{table}_image_counts] on [{table}](image_counts)")
                self.name_counts[table] = len(rows)
            conn.execute("commit")

    # 6. finish: statistics for the planner, inspect data, rename into place.
    def finish(self):
        conn = self.conn
        stats.write_stats(conn, self.stats, self.checksums.result())
        conn.execute("pragma analysis_limit = 1000")
        conn.execute("analyze")
        counts = {}
        for (table,) in conn.execute(sql.TABLE_NAMES).fetchall():
            if table == "images_fts":
                counts[table] = self.rows  # counting it would scan images
            else:
                counts[table] = conn.execute(f"select count(*) from [{table}]").fetchone()[0]
        conn.close()
        self.conn = None
        with open(self.db_path, "rb+") as fp:
            os.fsync(fp.fileno())
        self.size = self.db_path.stat().st_size
        with self.steps.bar("checksum", self.size, unit="B") as bar:
            digest = _sha256(self.db_path, bar.update)
        inspect_data = {
            database_name(self.out): {
                "hash": digest,
                "size": self.size,
                "file": str(self.out),
                "tables": {t: {"count": c} for t, c in counts.items()},
            }
        }
        fd, self.inspect_tmp = tempfile.mkstemp(
            dir=self.inspect_path.parent, prefix=f".{self.inspect_path.name}.", suffix=".tmp"
        )
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would, not mkstemp's 0600
        with os.fdopen(fd, "w") as fp:
            json.dump(inspect_data, fp, indent=2)
            fp.flush()
            os.fsync(fp.fileno())
        # Both or neither: a Ctrl-C from here on is too late to stop the build.
        with self.signals.held(swallow=True):
            os.replace(self.db_path, self.out)
            os.replace(self.inspect_tmp, self.inspect_path)
            self.inspect_tmp = None
            _fsync_dir(self.out.parent)
            if self.inspect_path.parent != self.out.parent:
                _fsync_dir(self.inspect_path.parent)

    def result(self):
        return BuildResult(
            path=self.out,
            inspect_path=self.inspect_path,
            database_name=database_name(self.out),
            rows=self.rows,
            source_rows=self.source_rows,
            domains=self.domain_count,
            registered_domains=self.registered_count,
            rows_without_domain=self.rows_without_domain,
            excluded=self.excluded,
            exclusions=self.exclusions.summary(),
            profile=", ".join(p.name for p in self.profiles),
            filter=rowfilter.describe(self.conditions),
            filtered=self.filtered,
            names=self.name_counts,
            size=self.size,
            timings=self.steps.timings,
            notes=self.notes,
        )


def _write_tables(conn, sources, loaded, exclusions, facts):
    conn.execute("begin")
    conn.execute(sql.CREATE_SOURCE_FILES)
    conn.executemany(
        "insert into source_files (name, rows, loaded, bytes) values (?, ?, ?, ?)",
        [(s.path.name, s.num_rows, n, s.num_bytes) for s, n in zip(sources, loaded)],
    )
    conn.execute(sql.CREATE_EXCLUSIONS)
    conn.executemany(
        "insert into exclusions (name, urls, hashes, rows_excluded) values (?, ?, ?, ?)",
        [(e["name"], e["urls"], e["hashes"], e["rows_excluded"]) for e in exclusions.summary()],
    )
    conn.execute(sql.CREATE_BUILD_INFO)
    info = {
        "datasette_laion_version": __version__,
        "built_at": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "sqlite_version": sqlite3.sqlite_version,
        "pyarrow_version": pa.__version__,
        **facts,
    }
    conn.executemany("insert into build_info (key, value) values (?, ?)", list(info.items()))
    conn.execute("commit")


def _sha256(path, update=None, block=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while True:
            data = fp.read(block)
            if not data:
                break
            digest.update(data)
            if update:
                update(len(data))
    return digest.hexdigest()


def _sqlite_temp_dir():
    """Where SQLite puts its temporary files on Unix (its own search order)."""
    for candidate in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return "."


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
