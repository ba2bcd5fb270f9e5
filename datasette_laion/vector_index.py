"""The vectors file beside a database (``NAME.vectors``): the image
embeddings of the rows the database kept, in rowid order, and the
nearest-neighbour index over them ("images like this one").

One file, so that it travels with the database as one piece::

    0       b"LAIONVEC", uint32 length, header (JSON), padded to HEADER_SPACE
    4096    rows x dim float16, unit length: row i is the vector of rowid i + 1
    ...     the faiss index, serialized (none for a small database)

The index is faiss OPQ + IVF-PQ (a learned rotation, an HNSW graph over the
list centres, PQ codes of PQ_BYTES bytes a vector): it proposes RESCORE
candidates, which are ranked again by exact cosine on the float16 vectors,
memory-mapped from this file. The index too is read in place, zero-copy:
its codes and ids (~PQ_BYTES + 8 bytes a row) are file pages that the
server's workers share and that stay cached while in use; the vectors are
read from disk, RESCORE rows a query. A database of fewer than EXACT_BELOW
rows has no index: every query is an exact scan.
The header's ``build_id`` is also in the database's build_info
(``vectors_build_id``): a vectors file of another build is refused.
"""
import json
import mmap
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"LAIONVEC"
HEADER_SPACE = 4096
VERSION = 1
EXACT_BELOW = 50_000  # rows: fewer are scanned exactly, no index
PQ_BYTES = 96  # bytes of PQ code a vector (768-d: 8 dimensions a byte)
HNSW_LINKS = 32  # the coarse quantizer's graph
NPROBE = 64  # inverted lists visited a query
# Candidates ranked again by exact cosine: at 12M benchmark rows (nprobe 64)
# recall@10 is 0.944 at 200, 0.960 at 400, 0.970 at 800, at about the same
# latency with the vectors cached; each is a 1.5 KB read when they are not
# (scripts/tune_vectors.py).
RESCORE = 400
TRAIN_PER_LIST = 40  # training vectors per inverted list
OPQ_ITERATIONS = 10  # of the rotation's training (faiss's default 50: most of the gain comes early)
CHUNK = 131_072  # rows scanned at a time (an exact query)
WRITE_BLOCK = 1 << 24  # bytes of serialized index written at a time (the build: vector_build.py)


def nlist_for(rows):
    """Inverted lists: ~4 sqrt(rows), a power of two, 64 to 4,096."""
    return int(min(4096, max(64, 2 ** round(np.log2(4 * np.sqrt(max(rows, 1)))))))


def pq_bytes_for(dim):
    return next(m for m in (PQ_BYTES, 64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if dim % m == 0)


@dataclass(frozen=True)
class Header:
    rows: int
    dim: int
    build_id: str
    index: str  # "exact", or a description of the faiss index
    index_offset: int = 0
    index_bytes: int = 0

    def encode(self):
        body = json.dumps({"version": VERSION, "dtype": "float16", **self.__dict__}).encode()
        head = MAGIC + struct.pack("<I", len(body)) + body
        if len(head) > HEADER_SPACE:
            raise ValueError("vectors header too long")
        return head + b"\0" * (HEADER_SPACE - len(head))


def read_header(path):
    with open(path, "rb") as fp:
        head = fp.read(HEADER_SPACE)
    if head[:8] != MAGIC:
        raise ValueError(f"{path} is not a vectors file written by datasette laion build")
    (length,) = struct.unpack("<I", head[8:12])
    data = json.loads(head[12:12 + length])
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: vectors file version {data.get('version')}, this datasette-laion reads {VERSION}")
    return Header(**{k: data[k] for k in Header.__dataclass_fields__})


def matrix(path, header, random=True):
    """The float16 vectors of a vectors file, memory-mapped, read-only
    (``map_rows``'s array)."""
    return map_rows(path, header, random)[0]


def map_rows(path, header, random=True):
    """(the float16 vectors of a vectors file, their memory map), read-only.

    ``random``: advised MADV_RANDOM, as the site reads them: a query's
    candidates are a few hundred rows scattered through the file, and with
    the kernel's usual readahead each one's page fault would read 128 KB
    around it (at 12M rows, 1,000 cold queries filled 14 GB of page cache);
    advised, each reads its own page. A scan (``random=False``) keeps the
    readahead."""
    with open(path, "rb") as fp:
        mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
    if random and hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)
    rows = np.frombuffer(mapped, dtype=np.float16, count=header.rows * header.dim, offset=HEADER_SPACE)
    return rows.reshape(header.rows, header.dim), mapped


# ------------------------------------------------------------------ reading


def open_index(path, offset=0, size=None):
    """(faiss index, the memory map it reads): the index read in place from
    ``path`` (``size`` bytes at ``offset``: the vectors file's), zero-copy. Its PQ codes and ids stay in the file's
    pages, which the kernel shares between the server's worker processes and
    may drop under memory pressure: opening it costs no anonymous memory,
    however large. The map must live as long as the index."""
    import faiss

    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=None if size is None else (size,))
    index = faiss.read_index(faiss.ZeroCopyIOReader(faiss.swig_ptr(mapped), mapped.size), faiss.IO_FLAG_MMAP_IFC)
    faiss.extract_index_ivf(index).nprobe = NPROBE
    return index, mapped


class Vectors:
    """An open vectors file: its rows memory-mapped, its index in memory."""

    def __init__(self, path):
        self.path = path
        self.header = read_header(path)
        self.rows, self._rows_map = map_rows(path, self.header)
        self.index = self._mapped = None
        if self.header.index_bytes:
            self.index, self._mapped = open_index(path, self.header.index_offset, self.header.index_bytes)

    @classmethod
    def from_parts(cls, rows, index):
        """Vectors over ``rows`` (float16, rowid order) and a built ``index``
        (or None): for scripts/bench_vectors.py, which measures this class."""
        self = cls.__new__(cls)
        self.path, self.rows, self.index, self._rows_map = None, rows, index, None
        self.header = Header(rows=len(rows), dim=rows.shape[1], build_id="", index="")
        if index is not None:
            import faiss

            faiss.extract_index_ivf(index).nprobe = NPROBE
        return self

    def vector(self, rowid):
        return np.asarray(self.rows[rowid - 1], dtype=np.float32)

    def nearest(self, query, k, exclude=()):
        """[(rowid, cosine)], the ``k`` rows nearest to ``query`` (a unit
        vector), highest first, leaving out the rowids in ``exclude``."""
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if not np.any(query):
            return []
        if self.index is None:
            return _top(self._scan(query[0], k + len(exclude)), k, exclude)
        _, ids = self.index.search(query, max(RESCORE, k + len(exclude)))
        candidates = np.unique(ids[0][ids[0] >= 0])  # sorted: reads in file order
        self._prefetch(candidates)
        scores = np.asarray(self.rows[candidates], dtype=np.float32) @ query[0]
        return _top(dict(zip((candidates + 1).tolist(), scores.tolist())), k, exclude)

    def _prefetch(self, rows0):
        """Ask for the pages of the rows ``rows0`` (0-based) all at once
        (MADV_WILLNEED): when they are not cached, the disk reads them
        together, instead of one page fault waiting after another."""
        if self._rows_map is None or not hasattr(mmap, "MADV_WILLNEED"):
            return
        row_bytes = self.header.dim * 2
        starts = HEADER_SPACE + rows0 * row_bytes
        firsts = starts // mmap.PAGESIZE * mmap.PAGESIZE
        ends = starts + row_bytes
        for first, end in zip(firsts.tolist(), ends.tolist()):
            self._rows_map.madvise(mmap.MADV_WILLNEED, first, end - first)

    def _scan(self, query, want):
        """{rowid: cosine} of the ``want`` best rows, by an exact scan."""
        scores = np.concatenate([np.asarray(self.rows[start:start + CHUNK], dtype=np.float32) @ query
                                 for start in range(0, len(self.rows), CHUNK)])
        best = np.argpartition(-scores, want)[:want] if want < len(scores) else np.arange(len(scores))
        return dict(zip((best + 1).tolist(), scores[best].tolist()))

    def within(self, rowid, threshold, limit):
        """[(rowid, cosine)] of up to ``limit`` rows at ``threshold`` or more
        from ``rowid``'s vector (its near-duplicates), highest first."""
        return [(r, s) for r, s in self.nearest(self.vector(rowid), limit, exclude={rowid}) if s >= threshold]


def _top(scores, k, exclude):
    ranked = sorted(((s, r) for r, s in scores.items() if r not in exclude and s > -2), key=lambda x: (-x[0], x[1]))
    return [(r, s) for s, r in ranked[:k]]
