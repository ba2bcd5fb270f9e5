"""The build's passes over the parquet files, and the spill files between them.

* ``scan``: the sort key of every row that the row filter keeps, read a row
  group at a time (only the key and filter columns), to cut the rows into
  buckets of at most ``sort_rows`` rows;
* ``partition_part`` (in worker processes, each a share of the row groups):
  applies the row filter (a row group's other columns are decoded only when
  some of its rows match), drops excluded rows, computes domain ids, and
  spills each row to its bucket's Arrow IPC file;
* ``read_bucket``: a bucket's spilled rows, sorted in final rowid order.

Rows are stored best first: by the profile's ``best_first`` column, highest
first (NULL last), ties in source order; a profile without one keeps source
order (the key is the row's position).
"""
import ctypes
import gc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from . import profiles, rowfilter, stats
from .exclude import load_exclusions
from .functions import AUTHORITY_PREFIX_RE2, domain, url_hashes
from .read import RowGroups, normalise
from .source import CORE_COLUMNS, SourceError, open_source

ARROW_TYPES = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string(), "BLOB": pa.binary()}
CORE_TYPES = {
    "url": pa.string(),
    "text": pa.string(),
    "width": pa.float64(),  # SQLite's INTEGER affinity stores 1024.0 as 1024
    "height": pa.float64(),
    "similarity": pa.float64(),
    "punsafe": pa.float64(),
    "pwatermark": pa.float64(),
    "aesthetic": pa.float64(),
    "hash": pa.string(),
    "__index_level_0__": pa.int64(),
}
BUILD_COLUMNS = ("domain_id", "url_hash", "_key", "_pos")  # added to the spilled rows


class DomainIds:
    """URLs -> domain ids, computing ``domain()`` once per distinct authority."""

    def __init__(self):
        self.ids = {}  # domain -> id (1-based); 0 stands for "no domain"
        self.by_prefix = {}
        self.counts = np.zeros(1024, dtype=np.int64)

    def _id(self, host):
        if host is None:
            return 0
        found = self.ids.get(host)
        if found is None:
            found = self.ids[host] = len(self.ids) + 1
        return found

    def _prefix_id(self, prefix):
        found = self.by_prefix.get(prefix)
        if found is None:
            found = self.by_prefix[prefix] = self._id(domain(prefix))
        return found  # 0 (no domain) is looked up again, and found here

    def for_urls(self, urls):
        """numpy int64 ids for an Arrow string array (0: no domain)."""
        n = len(urls)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        prefixes = pc.struct_field(pc.extract_regex(urls, AUTHORITY_PREFIX_RE2), [0])
        encoded = prefixes.dictionary_encode()
        dictionary = encoded.dictionary.to_pylist()
        get = self.by_prefix.get
        ids_of = np.array([get(p) or self._prefix_id(p) for p in dictionary], dtype=np.int64)
        missing = encoded.indices.is_null().to_numpy(zero_copy_only=False)
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        ids = ids_of[indices] if len(ids_of) else np.zeros(n, dtype=np.int64)
        if missing.any():
            # No regular authority: the URL is unusual; ask urlsplit about it whole.
            for i in np.nonzero(missing)[0]:
                ids[i] = self._id(domain(urls[int(i)].as_py()))
        return ids

    def count(self, ids):
        if len(self.ids) + 1 > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(len(self.ids) + 1024, dtype=np.int64)])
        self.counts[: len(self.ids) + 1] += np.bincount(ids, minlength=len(self.ids) + 1)[: len(self.ids) + 1]


def release_memory(collect=True):
    """Hand freed memory back to the system: Arrow's pool (mimalloc keeps
    freed pages for reuse) and the C heap (freed Python objects)."""
    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc only
    except (OSError, AttributeError):
        pass


def sort_key(values):
    """Ascending key for "best first": -value, NULL (and NaN) last."""
    keys = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    keys = -keys
    keys[np.isnan(keys)] = np.inf
    return keys


def bucket_cuts(keys, sort_rows):
    """Key values that cut the sorted keys into buckets of about sort_rows."""
    if len(keys) <= sort_rows:
        return np.zeros(0)
    keys = np.sort(keys)
    return np.unique(keys[sort_rows::sort_rows])


def scan(sources, best_first, conditions, sort_rows, progress=None):
    """Bucket cuts over the sort keys of the rows the filter keeps (none when
    every row fits in one bucket). Reads the key and filter columns only, a
    row group at a time."""
    total = sum(s.num_rows for s in sources)
    if total <= sort_rows:
        return np.zeros(0)
    needed = list(dict.fromkeys(([best_first] if best_first else []) + rowfilter.columns(conditions)))
    # Filled in place up to the rows kept: pages never written are never
    # resident, so a filter that keeps a tenth uses a tenth of it.
    keys = np.empty(total, dtype=np.float64)
    filled = position = 0
    for source in sources:
        reader = RowGroups(source)
        try:
            for group, rows in enumerate(source.row_group_rows):
                values = reader.columns(group, needed) if needed else {}
                if any(len(v) != rows for v in values.values()):
                    raise SourceError(f"{source.path}: row group {group} does not hold the rows its footer says; "
                                      "the file is damaged")
                part = sort_key(values[best_first]) if best_first else np.arange(position, position + rows, dtype=np.float64)
                if conditions:
                    part = part[rowfilter.mask(conditions, values)]
                keys[filled : filled + len(part)] = part
                filled += len(part)
                position += rows
                if progress:
                    progress(rows)
        finally:
            reader.close()
    cuts = bucket_cuts(keys[:filled], sort_rows)
    del keys
    release_memory()
    return cuts


def share_row_groups(sources, workers):
    """Split the row groups of every file into ``workers`` shares of about
    equal rows: [[{"source", "path", "profile", "row_groups", "position"}]]. A file's
    rows keep their global positions (file order), whoever reads them."""
    shares = [[] for _ in range(workers)]
    load = [0] * workers
    position = 0
    for index, source in enumerate(sources):
        groups = list(enumerate(source.row_group_rows))
        # contiguous runs, one per worker when the file has enough row groups
        runs = [groups[k * len(groups) // workers : (k + 1) * len(groups) // workers] for k in range(workers)]
        for run in runs:
            if not run:
                continue
            k = load.index(min(load))
            rows = sum(n for _, n in run)
            first = position + sum(source.row_group_rows[: run[0][0]])
            shares[k].append({"source": index, "path": str(source.path), "profile": source.profile.name,
                              "row_groups": [g for g, _ in run], "position": first})
            load[k] += rows
        position += source.num_rows
    return [share for share in shares if share] or [[]]


def spill_schema(extras):
    fields = [pa.field(c, CORE_TYPES[c]) for c in CORE_COLUMNS]
    fields += [pa.field(name, ARROW_TYPES[kind]) for name, kind in extras.items()]
    fields += [
        pa.field("domain_id", pa.int64()), pa.field("url_hash", pa.int64()),
        pa.field("_key", pa.float64()), pa.field("_pos", pa.int64()),
    ]
    return pa.schema(fields)


def _conform(batch, schema):
    arrays = []
    for field in schema:
        if field.name in BUILD_COLUMNS:
            continue
        array = batch.column(field.name)
        if array.type != field.type:
            try:
                array = pc.cast(array, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as ex:
                raise SourceError(f"column {field.name!r} cannot be stored as {field.type}: {ex}") from None
        arrays.append(array)
    return arrays


class _Spill:
    """Rows appended to ``bucket-<b>-<worker>.arrow`` of their score bucket."""

    def __init__(self, work, worker, cuts, schema):
        self.work, self.worker, self.cuts, self.schema = work, worker, cuts, schema
        self.writers, self.sizes = {}, {}

    def write(self, keyed, keys):
        buckets = np.searchsorted(self.cuts, keys, side="right")
        if len(self.cuts):
            order = np.argsort(buckets, kind="stable")
            keyed = keyed.take(pa.array(order))
            buckets = buckets[order]
        present, starts = np.unique(buckets, return_index=True)
        ends = list(starts[1:]) + [len(buckets)]
        for b, first, last in zip(present, starts, ends):
            b = int(b)
            if b not in self.writers:
                self.writers[b] = ipc.new_file(self.work / f"bucket-{b:05d}-{self.worker}.arrow", self.schema)
                self.sizes[b] = 0
            self.writers[b].write_batch(keyed.slice(int(first), int(last - first)))
            self.sizes[b] += int(last - first)

    def close(self):
        for writer in self.writers.values():
            writer.close()


def _filtered_batches(reader, group, rows, position, keep, batch_size):
    """(raw batch, positions) of a row group's rows that ``keep`` marks (all
    when None), one record batch at a time."""
    offset = 0
    for raw in reader.batches(group, batch_size):
        n = raw.num_rows
        positions = np.arange(position + offset, position + offset + n, dtype=np.int64)
        if keep is not None:
            part = keep[offset : offset + n]
            raw = raw.filter(pa.array(part))
            positions = positions[part]
        offset += n
        yield raw, positions, n
    if offset != rows:
        raise SourceError(f"{reader.source.path}: row group {group} does not hold the rows its footer says; "
                          "the file is damaged")


def partition_part(spec, progress=None):
    """One share of the partition step; runs in a worker process.

    Reads its row groups of the source files, keeps the rows the filter
    keeps, drops excluded rows, computes domain ids (its own numbering,
    remapped by the build afterwards), and appends every row to its bucket's
    spill file. Returns the figures the build needs, as JSON-able data.
    """
    work = Path(spec["work"])
    conditions = tuple(rowfilter.Condition(**c) for c in spec.get("conditions", ()))
    best_first = spec.get("best_first", "aesthetic")
    extras = spec["extras"]
    schema = spill_schema(extras)
    spill = _Spill(work, spec["worker"], np.array(spec["cuts"], dtype=np.float64), schema)
    exclusions = load_exclusions(spec["exclude"])
    domains = DomainIds()
    histograms = stats.Histograms()  # the statistics page's figures, in this pass
    loaded = {}
    excluded = filtered = null_text = 0
    try:
        for task in spec["tasks"]:
            source = open_source(task["path"], profiles.get(task["profile"]))  # as the check found it
            reader = RowGroups(source)
            position = task["position"]
            count = 0
            try:
                for group in task["row_groups"]:
                    rows = source.row_group_rows[group]
                    keep = None
                    if conditions:
                        keep = rowfilter.mask(conditions, reader.columns(group, rowfilter.columns(conditions)))
                        filtered += int(rows - keep.sum())
                        if not keep.any():  # the other columns are never decoded
                            position += rows
                            if progress:
                                progress(rows)
                            continue
                    for raw, positions, n in _filtered_batches(reader, group, rows, position, keep, spec["batch_size"]):
                        batch = normalise(raw, source, extras)
                        keep_rows = exclusions.keep_mask(batch)
                        if keep_rows is not None:
                            excluded += int(len(keep_rows) - keep_rows.sum())
                            batch = batch.filter(pa.array(keep_rows))
                            positions = positions[keep_rows]
                        if batch.num_rows:
                            histograms.add(batch)
                            ids = domains.for_urls(batch.column("url"))
                            domains.count(ids)
                            keys = sort_key(batch.column(best_first)) if best_first else positions.astype(np.float64)
                            hashes = url_hashes(batch.column("url"))
                            null_text += batch.column("text").null_count
                            arrays = _conform(batch, schema) + [pa.array(ids), hashes, pa.array(keys), pa.array(positions)]
                            spill.write(pa.RecordBatch.from_arrays(arrays, schema=schema), keys)
                            count += batch.num_rows
                        if progress:
                            progress(n)
                    position += rows
            finally:
                reader.close()
            loaded[task["source"]] = loaded.get(task["source"], 0) + count
    finally:
        spill.close()
    hosts = [None] * (len(domains.ids) + 1)
    for host, i in domains.ids.items():
        hosts[i] = host
    return {
        "loaded": loaded,
        "excluded": excluded,
        "filtered": filtered,
        "null_text": null_text,
        "exclusions": [e["rows_excluded"] for e in exclusions.summary()],
        "hosts": hosts,
        "counts": domains.counts[: len(hosts)].tolist(),
        "sizes": {str(b): n for b, n in spill.sizes.items()},  # as JSON has them
        "stats": histograms.state(),
    }


def read_bucket(parts, columns=None, remaps=None):
    """A bucket (spilled by one or more partition workers), sorted best first:
    the order of the final rowids. ``parts``: [(path, worker)]; ``remaps``:
    worker -> numpy array mapping its domain ids to the final ones."""
    tables = []
    for path, worker in parts:
        with pa.memory_map(str(path)) as source:
            table = ipc.open_file(source).read_all()
        if columns is not None:
            table = table.select(columns + ["_key", "_pos"])
        elif remaps is not None:
            ids = remaps[worker][table.column("domain_id").to_numpy()]
            table = table.set_column(table.schema.get_field_index("domain_id"), "domain_id", pa.array(ids))
        tables.append(table)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    order = pc.sort_indices(table, sort_keys=[("_key", "ascending"), ("_pos", "ascending")])
    return table.take(order)
