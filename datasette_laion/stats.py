"""Statistics of the whole dataset, computed by the build for the statistics page.

The histograms are accumulated in the build's partition pass, where every row
already passes through as an Arrow batch: ``Histograms.add(batch)`` costs a few
vectorised numpy operations per batch (1.7 s of CPU at 12.1M rows, shared by
the partition workers), instead of a full scan of the 4 GB images table at the
end. Each worker returns ``state()`` (JSON), the build ``merge()``s them, and
``write_stats()`` stores them in two small tables:

* ``stats_histogram``: one row per bucket of each metric;
* ``stats_figures``: count, missing, min, max and mean of each metric, and the
  rows over the usual punsafe / pwatermark thresholds.

``Checksums`` hashes the source parquet files (sha256) on a thread started
right after the check step, so the digests are ready long before the end; they
go to ``source_files.sha256``. Nothing here needs a running Datasette.
"""
import hashlib
import math
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import sql
from .metrics import METRICS, THRESHOLDS


def edges(metric):
    """Bucket edges, rounded so that they print and compare as decimals
    (0.3, not 0.30000000000000004)."""
    count = round((metric.stop - metric.start) / metric.step)
    return np.array([round(metric.start + i * metric.step, 9) for i in range(count + 1)], dtype=np.float64)


EDGES = {name: edges(metric) for name, metric in METRICS.items()}


# Lower bound of each bucket, then NaN: no value is >= NaN, so none goes past the last bucket.
_BOUNDS = {name: np.concatenate([[-np.inf], e, [np.nan]]) for name, e in EDGES.items()}


def bucket_indexes(name, values):
    """Bucket of each value: 0 below the first edge, k for edge[k-1] <= v <
    edge[k], len(edges) from the last edge up; what np.searchsorted(edges,
    values, "right") gives, in a third of its time: arithmetic, then a
    correction of the values that rounding put one bucket off."""
    metric, bounds = METRICS[name], _BOUNDS[name]
    last = len(bounds) - 3  # the last regular bucket
    index = np.floor((values - metric.start) / metric.step)
    np.clip(index, -1, last, out=index)
    index = index.astype(np.int64) + 1
    index -= values < bounds[index]
    index += values >= bounds[index + 1]
    return index


def _values(array):
    """float64 numpy values and a mask of the valid ones (not NULL, not NaN)."""
    values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    values = np.asarray(values, dtype=np.float64)
    return values, ~np.isnan(values)


class Histograms:
    """Accumulates every metric over batches of normalised images rows
    (``read.normalise``: the values exactly as they are stored)."""

    def __init__(self):
        self.rows = 0
        self.metrics = {
            name: {"counts": np.zeros(len(EDGES[name]) + 1, dtype=np.int64), "missing": 0, "n": 0,
                   "sum": 0.0, "min": None, "max": None}
            for name in METRICS
        }
        self.over = dict.fromkeys(list(THRESHOLDS) + ["both", "either"], 0)

    def _add(self, name, values, valid):
        entry = self.metrics[name]
        present = values if valid.all() else values[valid]
        entry["missing"] += int(len(values) - len(present))
        if not len(present):
            return
        buckets = bucket_indexes(name, present)
        entry["counts"] += np.bincount(buckets, minlength=len(entry["counts"]))
        entry["n"] += len(present)
        entry["sum"] += float(present.sum())
        low, high = present.min().item(), present.max().item()
        # Whole numbers as integers, while SQLite's INTEGER holds them.
        if METRICS[name].integer and low.is_integer() and high.is_integer() and max(abs(low), abs(high)) < 2**53:
            low, high = int(low), int(high)
        entry["min"] = low if entry["min"] is None else min(entry["min"], low)
        entry["max"] = high if entry["max"] is None else max(entry["max"], high)

    def add(self, batch):
        n = batch.num_rows
        if not n:
            return
        self.rows += n
        columns = {name: _values(batch.column(name)) for name in ("aesthetic", "punsafe", "pwatermark", "width", "height")}
        for name, (values, valid) in columns.items():
            self._add(name, values, valid)
        (width, width_ok), (height, height_ok) = columns["width"], columns["height"]
        ok = width_ok & height_ok & (height > 0)
        ratio = np.divide(width, height, out=np.zeros(n), where=ok)
        self._add("aspect_ratio", ratio, ok)
        lengths = pc.utf8_length(batch.column("text"))
        self._add("caption_length", *_values(lengths))
        flags = []
        for key, (column, threshold) in THRESHOLDS.items():
            flag = columns[column][0] > threshold  # NULL is NaN here: never over
            self.over[key] += int(flag.sum())
            flags.append(flag)
        self.over["both"] += int((flags[0] & flags[1]).sum())
        self.over["either"] += int((flags[0] | flags[1]).sum())

    def state(self):
        """JSON-able, for a worker process to return."""
        return {
            "rows": self.rows,
            "metrics": {name: {**entry, "counts": entry["counts"].tolist()} for name, entry in self.metrics.items()},
            "over": dict(self.over),
        }


def merge(states):
    """One state from the states of several workers."""
    total = Histograms().state()
    for state in states:
        total["rows"] += state["rows"]
        for key, count in state["over"].items():
            total["over"][key] += count
        for name, entry in state["metrics"].items():
            into = total["metrics"][name]
            into["counts"] = [a + b for a, b in zip(into["counts"], entry["counts"])]
            for key in ("missing", "n", "sum"):
                into[key] += entry[key]
            for key, pick in (("min", min), ("max", max)):
                if entry[key] is not None:
                    into[key] = entry[key] if into[key] is None else pick(into[key], entry[key])
    return total


def histogram_rows(name, counts):
    """[(bucket_start, bucket_end, count)] of a metric, without the empty
    buckets before the first and after the last value (inner ones are kept)."""
    cuts = EDGES[name].tolist()
    bounds = [(None, cuts[0])] + list(zip(cuts[:-1], cuts[1:])) + [(cuts[-1], None)]
    used = [i for i, count in enumerate(counts) if count]
    if not used:
        return []
    return [(start, end, counts[i]) for i, (start, end) in enumerate(bounds) if used[0] <= i <= used[-1]]


def figures(state):
    """stats_figures rows: (key, value)."""
    rows = [("rows", state["rows"])]
    for name, entry in state["metrics"].items():
        mean = entry["sum"] / entry["n"] if entry["n"] else None
        rows += [
            (f"{name}.count", entry["n"]),
            (f"{name}.missing", entry["missing"]),
            (f"{name}.min", entry["min"]),
            (f"{name}.max", entry["max"]),
            (f"{name}.mean", None if mean is None or math.isnan(mean) else round(mean, 6)),
        ]
    over = state["over"]
    rows += [(key, over[key]) for key in THRESHOLDS]
    rows += [
        ("punsafe_over_0_5_and_pwatermark_over_0_8", over["both"]),
        ("punsafe_over_0_5_or_pwatermark_over_0_8", over["either"]),
    ]
    return rows


def write_stats(conn, state, checksums=None):
    """Create and fill stats_histogram and stats_figures from a (merged)
    ``state``, and fill source_files.sha256 from ``checksums`` (in
    source_files id order). ``conn`` is the build's connection (autocommit)."""
    conn.execute("begin")
    conn.execute(sql.CREATE_STATS_HISTOGRAM)
    conn.execute(sql.CREATE_STATS_FIGURES)
    for name in METRICS:
        conn.executemany(
            sql.INSERT_STATS_HISTOGRAM,
            [(name, start, end, count) for start, end, count in histogram_rows(name, state["metrics"][name]["counts"])],
        )
    conn.executemany(sql.INSERT_STATS_FIGURE, figures(state))
    if checksums is not None:
        conn.executemany(
            "update source_files set sha256 = ? where id = ?", [(digest, i) for i, digest in enumerate(checksums, 1)]
        )
    conn.execute("commit")


def sha256_file(path, stop=None, block=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while not (stop is not None and stop.is_set()):
            data = fp.read(block)
            if not data:
                return digest.hexdigest()
            digest.update(data)  # hashlib releases the GIL for large blocks
    return None


class Checksums:
    """sha256 of files, on a daemon thread started at once; ``result()`` waits
    for it and returns the hex digests in order (raising what the thread
    raised); ``stop()`` makes the thread give up."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.digests = None
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sha256 of sources", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.digests = [sha256_file(path, self._stop) for path in self.paths]
        except OSError as ex:
            self.error = ex

    def result(self):
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.digests

    def stop(self):
        self._stop.set()
