"""Build the SQLite database from image-text parquet files.

The build never touches the output path until the very end: it works in a
directory beside it (``.OUT.db.build-<pid>-xxxx``) and renames the finished
file over OUT in one step, so a failure at any point leaves the previous
database as it was. Steps, each a method of ``_Builder`` that takes and
returns values:

1. check:     every input file's footer and columns (its source profile), the
              row filter, the names lists and the exclusion lists, before
              anything is written: a ``Plan``;
2. scan:      read the sort and filter columns only, to cut the kept rows
              into buckets of at most ``sort_rows`` rows (partition.py);
3. partition: stream every file once in worker processes, keep the rows the
              filter keeps, drop excluded rows, compute domain ids and spill
              each row to its bucket as Arrow IPC (partition.py): ``Loaded``;
              then rank the domains: ``Domains``;
4. load:      bucket by bucket, best first, sort in memory and insert into
              ``images`` with rowid = rank, while a worker process builds the
              identical full-text index in a side database, so tokenizing
              runs on the second core (build_db.py);
5. indexes, facts tables, the full-text index copied in, names counts;
6. finish:    statistics tables (stats.py; their figures come from the
              partition pass), inspect data (exact counts, sha256), rename
              into place.

Worker processes, signals and progress bars are build_workers.py's.
"""
import dataclasses
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import build_db, build_vectors, embeddings, rowfilter, sql, stats, vector_index
from .build_values import BuildResult, Domains, Loaded, Plan, database_name, vectors_path
from .build_workers import Signals, Steps, Worker, WorkerError, remove_stale_work_dirs, wait_all
from .exclude import load_exclusions
from .functions import registrable_domain
from .names import NamesError, load_names
from .partition import partition_part, release_memory, scan, share_row_groups
from .source import SourceError, open_sources, source_info

DEFAULT_BATCH_SIZE = 50_000
DEFAULT_SORT_ROWS = 150_000


class BuildError(Exception):
    """A build that could not be done; OUT is unchanged."""


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
    min_similarity=None,
    embeddings=(),
    exact_below=None,
):
    """Build ``out`` from parquet ``inputs`` (files or directories); see the
    module docstring. ``workers``: processes that read the parquet files
    (default: 2, or 1 on one core). ``profile``: the name of the source
    profile (profiles.py) to read the files as (default: found from their
    columns). ``min_aesthetic``, ``max_punsafe``, ``min_similarity``: load
    only the rows with aesthetic >= / punsafe <= / similarity >= the value
    (rowfilter.py). ``embeddings``: paths of embedding files aligned with the
    parquet files (embeddings.py): NAME.vectors is written beside OUT
    (vector_index.py; ``exact_below``: rows under which it has no index). Returns a
    BuildResult; raises BuildError (OUT unchanged)."""
    builder = _Builder(out, inspect_file, batch_size, sort_rows, progress, workers)
    builder.exact_below = vector_index.EXACT_BELOW if exact_below is None else exact_below
    return builder.run(inputs, names_dir, exclude, profile, (min_aesthetic, max_punsafe, min_similarity), embeddings)


class _Builder:
    """The steps in order. Its attributes are the settings and what the
    cleanup must undo (work directory, connection, worker processes, the
    checksum thread, a temporary inspect file); the steps pass everything
    else to each other as values."""

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
        self.steps = Steps(progress)
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self.signals = Signals()
        # What cleanup() undoes.
        self.work = self.db_path = self.conn = self.checksums = self.inspect_tmp = None
        self.running = []

    def run(self, inputs, names_dir, exclude, profile=None, limits=(None, None, None), embeddings=()):
        with self.signals:
            return self._run(inputs, names_dir, exclude, profile, limits, embeddings)

    def _run(self, inputs, names_dir, exclude, profile, limits, embeddings):
        with self.steps.timed("check"):
            plan = self.check(inputs, names_dir, exclude, profile, limits, embeddings)
        remove_stale_work_dirs(self.out)
        self.work = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.build-{os.getpid()}-"))
        self.db_path = self.work / "build.db"
        try:
            with self.steps.timed("scan"):
                cuts = self.scan(plan)
            with self.steps.timed("partition"):
                results, loaded = self.partition(plan, cuts)
                # The full-text index needs only the buckets: it starts now,
                # while the domains are ranked here.
                with self.signals.held():
                    fts = Worker("fts", {"db": str(self.work / "fts.db"), "buckets": loaded.buckets,
                                         "batch_size": self.batch_size}, self.work, "fts")
                    self.running = [fts]
                domains = self.rank_domains(results)
                del results
            with self.steps.timed("load"):
                self.load(plan, loaded, domains)
            with self.steps.timed("indexes"):
                self.create_indexes()
                self.write_info_tables(plan, loaded, domains)
            with self.steps.timed("full-text index"):
                self.copy_fts(loaded.rows)
            with self.steps.timed("names"):
                name_counts = self.count_names(plan.names)
            with self.steps.timed("embeddings"):
                vector_facts = self.embed(plan, loaded)
            with self.steps.timed("finish"):
                size = self.finish(plan, loaded)
            self.steps.timings["total"] = time.perf_counter() - self.started
            return BuildResult(
                path=self.out, inspect_path=self.inspect_path, database_name=database_name(self.out),
                rows=loaded.rows, source_rows=plan.source_rows, domains=domains.count,
                registered_domains=domains.registered_count, rows_without_domain=domains.without_domain,
                excluded=loaded.excluded, exclusions=plan.exclusions.summary(), names=name_counts, size=size,
                timings=self.steps.timings, notes=plan.notes, profile=", ".join(p.name for p in plan.profiles),
                filter=rowfilter.describe(plan.conditions), filtered=loaded.filtered,
                vectors=vectors_path(self.out) if vector_facts else None, vector_facts=vector_facts,
            )
        except SourceError as ex:
            raise BuildError(str(ex)) from None
        except WorkerError as ex:
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
        places.setdefault(Path(build_db.sqlite_temp_dir()).resolve(), "SQLite's sort files, TMPDIR")
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
    def check(self, inputs, names_dir, exclude, profile, limits, embedding_paths=()):
        try:
            conditions = rowfilter.conditions(*limits)
            sources = open_sources(inputs, profile)
            rowfilter.check(conditions, sources)
            vectors = embeddings.aligned(embedding_paths, sources) if embedding_paths else []
            names, notes = load_names(names_dir)
            exclusions = load_exclusions(exclude)
        except (SourceError, NamesError) as ex:
            raise BuildError(str(ex)) from None
        self.checksums = stats.Checksums([s.path for s in sources])  # on a thread, meanwhile
        return Plan(sources, conditions, names, exclusions, list(notes), vectors)

    # 2. scan: the sort key of every row kept, to cut the sort into buckets.
    def scan(self, plan):
        if plan.source_rows <= self.sort_rows:
            return np.zeros(0)
        with self.steps.bar("scan scores", plan.source_rows) as bar:
            return scan(plan.sources, plan.best_first, plan.conditions, self.sort_rows, bar.update)

    # 3. partition: the filter, exclusions, domains, spill rows to their
    #    bucket, in worker processes that share out the row groups.
    def partition(self, plan, cuts):
        shares = share_row_groups(plan.sources, self.workers)
        base = {
            "work": str(self.work), "cuts": cuts.tolist(), "extras": plan.extras,
            "exclude": [str(e.path) for e in plan.exclusions.lists], "batch_size": self.batch_size,
            "best_first": plan.best_first, "conditions": [dataclasses.asdict(c) for c in plan.conditions],
        }
        with self.steps.bar("read parquet", plan.source_rows) as bar:
            if len(shares) == 1 and self.workers == 1:
                results = [partition_part({**base, "worker": 0, "tasks": shares[0]}, bar.update)]
            else:
                # Held while workers start and are waited for: each is on
                # the list that cleanup stops, and no Popen lock is left taken.
                with self.signals.held():
                    self.running = []
                    for k, tasks in enumerate(shares):
                        spec = {**base, "worker": k, "tasks": tasks}
                        self.running.append(Worker("partition", spec, self.work, f"partition-{k}"))
                    results = wait_all(self.running, bar, self.signals.check)
                    self.running = []
        per_source = [0] * len(plan.sources)
        for result in results:
            for source, count in result["loaded"].items():
                per_source[int(source)] += count
        for i, exclusion in enumerate(plan.exclusions.lists):
            exclusion.rows_excluded = sum(r["exclusions"][i] for r in results)
        # The buckets in row order, with the rowid each starts at.
        buckets, first = [], 1
        for b in sorted({int(b) for r in results for b in r["sizes"]}):
            parts = [(str(self.work / f"bucket-{b:05d}-{k}.arrow"), k) for k, r in enumerate(results) if str(b) in r["sizes"]]
            buckets.append((parts, first))
            first += sum(r["sizes"].get(str(b), 0) for r in results)
        loaded = Loaded(
            per_source=per_source,
            excluded=sum(r["excluded"] for r in results),
            filtered=sum(r["filtered"] for r in results),
            null_text=sum(r["null_text"] for r in results),
            stats=stats.merge(r["stats"] for r in results),
            buckets=buckets,
        )
        return results, loaded

    def rank_domains(self, results):
        """The domain and registered_domain rows, ranked by image count (most
        first), and each worker's domain ids mapped to the final ones."""
        counts = {}
        without_domain = 0
        for result in results:
            without_domain += result["counts"][0]
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
        return Domains(
            rows=[(i, host, count, registered_ids.get(registered_of[host])) for i, (host, count) in enumerate(ranked, start=1)],
            registered_rows=[(i, name, c, h) for i, (name, (c, h)) in enumerate(ranked_registered, start=1)],
            remaps=[np.array([0] + [final.get(h, 0) for h in r["hosts"][1:]], dtype=np.int64) for r in results],
            without_domain=without_domain,
        )

    # 4. load: images in rowid order (the full-text index is built meanwhile).
    def load(self, plan, loaded, domains):
        self.conn = build_db.connect(self.db_path)
        build_db.create_tables(self.conn, plan.extras)
        # The domain tables first: their rows can then leave memory.
        self.conn.execute("begin")
        build_db.insert_domains(self.conn, domains.rows, domains.registered_rows)
        domains.rows = domains.registered_rows = None
        release_memory()
        # Held while the reader thread runs, raised between chunks: an
        # interrupt inside the thread pool's locks could leave it waiting for
        # ever, and the build with it.
        with self.signals.held(), self.steps.bar("load images", loaded.rows) as bar:
            build_db.insert_images(self.conn, loaded.buckets, domains.remaps, plan.extras, self.batch_size,
                                   bar.update, self.signals.check)
            self.conn.execute("commit")

    # 5. indexes, while the full-text index is finished on the other core.
    def create_indexes(self):
        with self.steps.bar("indexes", len(sql.CREATE_INDEXES), unit="index") as bar:
            build_db.create_indexes(self.conn, bar.update)

    def write_info_tables(self, plan, loaded, domains):
        facts = {
            "order": plan.profiles[0].order,  # rowid 1 is the best; search relies on "aesthetic desc"
            "rows": loaded.rows,
            "source_rows": plan.source_rows,
            "excluded_rows": loaded.excluded,
            "domains": domains.count,
            **source_info(plan.sources, plan.extras),
            "filter": rowfilter.describe(plan.conditions),  # NULL: every row
            "filtered_rows": loaded.filtered,  # left out by the filter
        }
        build_db.write_info_tables(self.conn, plan.sources, loaded.per_source, plan.exclusions, facts)
        build_db.insert_facts(self.conn, {
            "registered_domains": domains.registered_count,
            "rows_without_domain": domains.without_domain,
            "null_captions": loaded.null_text,
            **build_db.build_figures(self.conn),
        })

    def copy_fts(self, rows):
        with self.signals.held(), self.steps.bar("full-text index", rows) as bar:
            wait_all(self.running, bar, self.signals.check)
            self.running = []
        self.conn = build_db.copy_fts(self.conn, self.db_path, self.work / "fts.db")

    # Names: each one's image count, as an FTS5 phrase.
    def count_names(self, names):
        total = sum(len(rows) for _, rows in names.values())
        with self.steps.bar("name counts", total, unit="names") as bar:
            return build_db.count_names(self.conn, names, bar.update)

    # Embeddings (--embeddings): the vectors file and the near-duplicates.
    def embed(self, plan, loaded):
        if not plan.embeddings:
            return None
        with self.signals.held():
            facts = build_vectors.run(self.work / "vectors", plan.embeddings, loaded.buckets, self.conn,
                                      self.steps.bar, self.exact_below)
        build_db.insert_facts(self.conn, facts)
        return facts

    # 6. finish: statistics for the planner, inspect data, rename into place.
    def finish(self, plan, loaded):
        counts = build_db.finish_tables(self.conn, loaded.stats, self.checksums.result(), loaded.rows)
        self.conn.close()
        self.conn = None
        with open(self.db_path, "rb+") as fp:
            os.fsync(fp.fileno())
        size = self.db_path.stat().st_size
        with self.steps.bar("checksum", size, unit="B") as bar:
            digest = build_db.sha256(self.db_path, bar.update)
        inspect_data = build_db.other_inspect_entries(self.inspect_path, database_name(self.out))
        inspect_data |= {
            database_name(self.out): {
                "hash": digest,
                "size": size,
                "file": str(self.out),
                "tables": {t: {"count": c} for t, c in counts.items()},
            }
        }
        fd, self.inspect_tmp = tempfile.mkstemp(
            dir=self.inspect_path.parent, prefix=f".{self.inspect_path.name}.", suffix=".tmp"
        )
        build_db.write_inspect(fd, inspect_data)
        # Both or neither: a Ctrl-C from here on is too late to stop the build.
        with self.signals.held(swallow=True):
            vectors = self.work / "vectors"
            if vectors.exists():
                os.replace(vectors, vectors_path(self.out))
            else:  # a previous build's: it does not belong to this database
                vectors_path(self.out).unlink(missing_ok=True)
            os.replace(self.db_path, self.out)
            os.replace(self.inspect_tmp, self.inspect_path)
            self.inspect_tmp = None
            build_db.fsync_dir(self.out.parent)
            if self.inspect_path.parent != self.out.parent:
                build_db.fsync_dir(self.inspect_path.parent)
        return size
