"""Writing the vectors file (its format: vector_index.py) during the build,
in memory that does not grow with the data: 12M rows of 768-d vectors are
18 GB of float16, the build's whole budget 2 GB.

Nothing here maps a file. A map's pages count in the process's resident
memory once read (the whole vectors file, by the end of a pass), so the
vectors are read with pread into buffers of the build's own, a block or a
list of rows at a time (RowReader); what was read stays in the kernel's page
cache, shared and droppable, not in the build's RSS.

The index (OPQ + IVF-PQ, see vector_index.py) is built in two passes over
the vectors so that its inverted lists are allocated once, at their final
size, instead of growing by doubling as faiss's ``add`` grows them (up to
twice the 1.2 GB that 12M rows' codes and ids take):

1. each block of rows is rotated, assigned its list and encoded; the codes
   go to a scratch file (PQ_BYTES a row) and the lists into one array;
2. each list is sized from the counts, then filled from the scratch file.

The lists array (4 bytes a row) is returned for the near-duplicate pass.
Freed memory is handed back to the system between the phases (the C heap
keeps it otherwise), so that each phase's peak is its own.
"""
import os

import numpy as np

from . import vector_index
from .partition import release_memory
from .vector_index import HEADER_SPACE, HNSW_LINKS, NPROBE, OPQ_ITERATIONS, RESCORE, TRAIN_PER_LIST

READ_ROWS = 32_768  # rows read, converted and encoded at a time (~100 MB of float32 at 768-d)
TAKE_ROWS = 16_384  # rows of a scattered read at a time (the training sample)
FILL_ROWS = 1 << 18  # rows of codes placed into the lists at a time (~25 MB at 96 bytes)
REGION_BYTES = 1 << 28  # vectors put in rowid order at a time when written (twice that in memory)


class RowReader:
    """``rows`` x ``dim`` float16 rows of ``path`` from byte ``offset``,
    read with pread (see the module's docstring)."""

    def __init__(self, path, rows, dim, offset=HEADER_SPACE):
        self.path, self.rows, self.dim, self.offset = path, rows, dim, offset
        self.row_bytes = dim * 2
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self):
        return self.rows

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def block(self, start, stop):
        """Rows ``start`` to ``stop`` (0-based), as float32."""
        out = np.empty((stop - start, self.dim), dtype=np.float16)
        self._read_into(out, start)
        return out.astype(np.float32)

    def take(self, indices, dtype=np.float32):
        """The rows at ``indices`` (0-based, ascending), as ``dtype``: a run
        of consecutive rows is one read."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=dtype)
        for at in range(0, len(indices), TAKE_ROWS):
            part = indices[at:at + TAKE_ROWS]
            buffer = np.empty((len(part), self.dim), dtype=np.float16)
            starts = np.flatnonzero(np.diff(part, prepend=-2) != 1)
            ends = np.append(starts[1:], len(part))
            for first, last in zip(starts.tolist(), ends.tolist()):
                self._read_into(buffer[first:last], int(part[first]))
            out[at:at + len(part)] = buffer
        return out

    def _read_into(self, out, row):
        _pread_into(self.fd, out, self.offset + row * self.row_bytes, self.path, f"row {row + len(out)}")


def write_vectors(path, files, positions, progress=None, region_rows=None):
    """The float16 vectors of the kept rows into ``path``, in rowid order:
    ``files`` (embeddings.EmbeddingFile, aligned with the source files),
    ``positions`` (the source position of each rowid's row, rowid order).
    Returns (rows, dim).

    The rowids are in no relation to the source order, so writing each row
    where its rowid says is a scattered write of 1.5 KB, most of a page: at
    12M rows the kernel reads pages back to complete them and writes each
    several times (~45 s per 1M rows measured). Instead, two passes that
    only ever write long runs:

    1. the file is cut into regions of ``region_rows`` rowids (REGION_BYTES
       each); each embedding file is streamed a block at a time, and each
       kept row is appended to its rowid's region, in arrival order;
    2. each region is read back whole, put in rowid order in memory, and
       written again where it was.

    ``progress`` counts the source rows of pass 1, then the kept rows of
    pass 2."""
    rows, dim = len(positions), files[0].dim
    row_bytes = dim * 2
    region_rows = region_rows or max(1, REGION_BYTES // row_bytes)
    with open(path, "wb") as fp:
        fp.truncate(HEADER_SPACE + rows * row_bytes)
    fd = os.open(path, os.O_RDWR)
    try:
        _append_to_regions(fd, files, positions, region_rows, row_bytes, progress)
        _put_in_order(fd, positions, region_rows, dim, progress)
    finally:
        os.close(fd)
    return rows, dim


def _append_to_regions(fd, files, positions, region_rows, row_bytes, progress):
    order = np.argsort(positions, kind="stable")  # rowid - 1 of each kept row, in source order
    ordered = positions[order]
    filled = np.arange(0, len(positions), region_rows, dtype=np.int64)  # each region's next row
    start = 0
    for found in files:
        for first, block in found.blocks(READ_ROWS):
            low, high = np.searchsorted(ordered, [start + first, start + first + len(block)])
            if high > low:
                rowids0 = order[low:high]
                vectors = block[ordered[low:high] - start - first].astype(np.float16)
                regions = rowids0 // region_rows
                by_region = np.argsort(regions, kind="stable")  # arrival order kept within a region
                regions, vectors = regions[by_region], vectors[by_region]
                cuts = np.flatnonzero(np.diff(regions, prepend=-1))
                for at, stop in zip(cuts.tolist(), np.append(cuts[1:], len(regions)).tolist()):
                    region = int(regions[at])
                    _pwrite(fd, vectors[at:stop], HEADER_SPACE + int(filled[region]) * row_bytes)
                    filled[region] += stop - at
            if progress:
                progress(len(block))
        start += found.rows


def _put_in_order(fd, positions, region_rows, dim, progress):
    """Pass 2: a region's rows arrived in source order, so the i-th row
    written to it is the region's rowid with the i-th lowest position."""
    rows = len(positions)
    read, ordered = (np.empty((min(rows, region_rows), dim), dtype=np.float16) for _ in range(2))
    for first in range(0, rows, region_rows):
        stop = min(rows, first + region_rows)
        here, in_order = read[:stop - first], ordered[:stop - first]
        offset = HEADER_SPACE + first * dim * 2
        _pread_into(fd, here, offset, "the vectors file", f"row {stop}")
        in_order[np.argsort(positions[first:stop], kind="stable")] = here
        for at in range(0, len(in_order), TAKE_ROWS):
            _pwrite(fd, in_order[at:at + TAKE_ROWS], offset + at * dim * 2)
        if progress:
            progress(stop - first)


def _pwrite(fd, array, offset):
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while len(view):
        wrote = os.pwrite(fd, view, offset)
        view, offset = view[wrote:], offset + wrote


def _pread_into(fd, out, offset, name, ended):
    """Fill ``out`` from ``fd`` at ``offset``; an OSError that says so if
    the file (``name``) ends before ``ended``."""
    view = memoryview(out).cast("B")
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise OSError(f"{name}: ended before {ended}")
        view, offset = view[got:], offset + got


def build_index(reader, scratch, exact_below=vector_index.EXACT_BELOW, progress=None):
    """(faiss index or None, list of each row or None, description): an
    OPQ + IVF-PQ index over ``reader``'s rows (a RowReader), trained on a
    sample; None for fewer than ``exact_below`` rows. ``scratch``: a path
    for the codes between the two passes, removed when done.

    OPQ rotates the vectors so that the PQ sub-vectors carry equal shares of
    the variance (CLIP embeddings put most of it in a few hundred directions):
    on the benchmark's vectors it lifts recall@10 at 200 candidates from
    0.93 to 0.98 at 2M rows (scripts/bench_vectors.py). The rotation is
    orthogonal, so inner products, and cosines, are unchanged."""
    rows, dim = reader.rows, reader.dim
    if rows < exact_below:
        if progress:
            progress(rows)
        return None, None, "exact"
    import faiss

    nlist, m = vector_index.nlist_for(rows), vector_index.pq_bytes_for(dim)
    rotation, quantizer, ivf = _trained(faiss, reader, nlist, m)
    release_memory(collect=False)
    lists = np.empty(rows, dtype=np.int32)
    try:
        with open(scratch, "wb") as codes_file:
            for start in range(0, rows, READ_ROWS):
                block = np.ascontiguousarray(rotation.apply(reader.block(start, min(rows, start + READ_ROWS))))
                assigned = np.ascontiguousarray(quantizer.search(block, 1)[1][:, 0])
                lists[start:start + len(block)] = assigned
                codes = np.empty((len(block), ivf.code_size), dtype=np.uint8)
                ivf.encode_vectors(len(block), faiss.swig_ptr(block), faiss.swig_ptr(assigned), faiss.swig_ptr(codes))
                codes_file.write(codes.tobytes())
                if progress:
                    progress(len(block))
        _fill_lists(faiss, ivf, lists, scratch)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    ivf.nprobe = NPROBE
    index = faiss.IndexPreTransform(rotation, ivf)
    return index, lists, f"faiss OPQ{m},IVF{nlist}_HNSW{HNSW_LINKS},PQ{m} (nprobe {NPROBE}, {RESCORE} rescored)"


def _trained(faiss, reader, nlist, m):
    """(rotation, coarse quantizer, IVF-PQ), trained on TRAIN_PER_LIST rows
    a list, drawn at random. The rotation is trained first, on at most the
    rows faiss's OPQ uses (its max_train_points), read on their own so that
    the whole sample is not held beside OPQ's working copies; then the lists
    and codes, on the sample rotated a part at a time."""
    rows, dim = reader.rows, reader.dim
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(rows, size=min(rows, TRAIN_PER_LIST * nlist), replace=False))
    rotation = faiss.OPQMatrix(dim, m)
    rotation.niter = OPQ_ITERATIONS
    rotation.train(reader.take(np.sort(rng.choice(picks, size=min(len(picks), rotation.max_train_points),
                                                  replace=False))))
    sample = np.empty((len(picks), dim), dtype=np.float32)
    for at in range(0, len(picks), TAKE_ROWS):
        sample[at:at + TAKE_ROWS] = rotation.apply(reader.take(picks[at:at + TAKE_ROWS]))
    quantizer = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)  # keeps a reference to it
    ivf.cp.niter = 10
    ivf.train(sample)
    return rotation, quantizer, ivf


def _fill_lists(faiss, ivf, lists, scratch):
    """Size each inverted list once, then place the codes (read back from
    ``scratch`` in row order) and their ids (row numbers) into them."""
    code_size, invlists = ivf.code_size, ivf.invlists
    sizes = np.bincount(lists, minlength=ivf.nlist)
    for number in np.flatnonzero(sizes).tolist():
        invlists.resize(number, int(sizes[number]))
    filled = np.zeros(ivf.nlist, dtype=np.int64)
    with open(scratch, "rb") as codes_file:
        for start in range(0, len(lists), FILL_ROWS):
            codes = np.frombuffer(codes_file.read(FILL_ROWS * code_size), dtype=np.uint8).reshape(-1, code_size)
            here = lists[start:start + len(codes)]
            order = np.argsort(here, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(np.bincount(here, minlength=ivf.nlist))])
            for number in np.flatnonzero(np.diff(bounds)).tolist():
                rows = order[bounds[number]:bounds[number + 1]]
                ids = (rows + start).astype(np.int64)
                chosen = np.ascontiguousarray(codes[rows])
                invlists.update_entries(number, int(filled[number]), len(rows), faiss.swig_ptr(ids),
                                        faiss.swig_ptr(chosen))
                filled[number] += len(rows)
    ivf.ntotal = len(lists)


def finish_file(path, rows, dim, build_id, index, description):
    """Append the serialized index and write the header: the file is whole."""
    index_offset = index_bytes = 0
    if index is not None:
        import faiss

        index_offset = -(-(HEADER_SPACE + rows * dim * 2) // HEADER_SPACE) * HEADER_SPACE
        with open(path, "r+b") as fp:
            fp.seek(index_offset)
            # streamed to the file: never a second copy of the index in memory
            faiss.write_index(index, faiss.PyCallbackIOWriter(fp.write, vector_index.WRITE_BLOCK))
            index_bytes = fp.tell() - index_offset
    header = vector_index.Header(rows=rows, dim=dim, build_id=build_id, index=description,
                                 index_offset=index_offset, index_bytes=index_bytes)
    with open(path, "r+b") as fp:
        fp.write(header.encode())
        fp.flush()
        os.fsync(fp.fileno())
    return header
