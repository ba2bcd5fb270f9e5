"""Image embeddings shipped beside the metadata (``build --embeddings``),
read file by file and checked against the parquet files row by row.

Sources ship them in several forms, all aligned with the metadata by file
and row position:

* LAION-5B's ``img_emb_NNNN.npy`` beside ``metadata_NNNN.parquet`` (a 2-D
  float16 array per part);
* DataComp's one ``.npz`` per shard, holding ``l14_img`` (and ``l14_txt``,
  ``b32_img``, ``b32_txt``: the image one of the largest model is read);
* a parquet file with a column of vectors (a list or fixed-size list of
  floats), as PD12M's ``embeddings/`` and many re-uploads have.

``--embeddings PATH`` is repeatable; a directory stands for its embedding
files in name order (``img_emb_*.npy``, ``*.npz``, ``*.parquet``). There must
be one embedding file per metadata file, each with exactly as many rows:
anything else is refused before the build starts, saying which file differs.
"""
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .source import SourceError

NPZ_KEYS = ("l14_img", "img_emb", "image_embeddings", "embeddings", "b32_img")  # the image vectors, best first
DIRECTORY_PATTERNS = ("img_emb_*.npy", "*.npz", "*.parquet")


@dataclass(frozen=True)
class EmbeddingFile:
    path: Path
    kind: str  # npy, npz, parquet
    rows: int
    dim: int
    member: str = None  # the npz array or the parquet column read

    def blocks(self, rows):
        """(first row, vectors) of the file, ``rows`` at a time: float32,
        each row of unit length (a zero or non-finite row stays zero: it has
        no neighbours). Streamed: memory is one block, however large the
        file, and nothing is mapped."""
        if self.kind == "parquet":
            first = 0
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=rows, columns=[self.member]):
                column = batch.column(0)
                yield first, unit_rows(_list_values(column, len(column), self.dim))
                first += len(column)
            return
        with zipfile.ZipFile(self.path) if self.kind == "npz" else _nothing() as archive:
            with archive.open(self.member + ".npy") if archive else open(self.path, "rb") as fp:
                dtype, fortran = _array_header(fp)[1:]
                if fortran:
                    raise SourceError(f"embeddings: {self.path} stores its array in Fortran order; "
                                      "save it in C order (numpy's default)")
                row_bytes = self.dim * dtype.itemsize
                for first in range(0, self.rows, rows):
                    count = min(rows, self.rows - first)
                    data = fp.read(count * row_bytes)
                    if len(data) != count * row_bytes:
                        raise SourceError(f"embeddings: {self.path} ends before row {first + count:,}")
                    yield first, unit_rows(np.frombuffer(data, dtype=dtype).reshape(count, self.dim))

    def read(self):
        """All the file's vectors (``blocks``, joined): small files only."""
        return np.concatenate([block for _, block in self.blocks(max(self.rows, 1))] or
                              [np.zeros((0, self.dim), dtype=np.float32)])


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _array_header(fp):
    """(shape, dtype, fortran order) of the .npy stream ``fp``, left at its data."""
    version = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fp)
    if dtype.hasobject or dtype.kind not in "fiu":
        raise SourceError(f"embeddings: {getattr(fp, 'name', fp)} holds {dtype} values, not numbers")
    return shape, dtype, fortran


def unit_rows(block):
    block = np.array(block, dtype=np.float32, copy=True)
    block[~np.isfinite(block).all(axis=1)] = 0
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    np.divide(block, norms, out=block, where=norms > 0)
    return block


def _list_values(column, rows, dim):
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(rows, dim)
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != dim).any():
        raise SourceError(f"embeddings: a row of the vector column has {int(lengths[lengths != dim][0])} values, "
                          f"not {dim} as the first one")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(rows, dim)


def find_files(paths):
    """The embedding files PATHs name (files, or directories: their
    embedding files in name order)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            files = []
            for pattern in DIRECTORY_PATTERNS:
                files = sorted(path.glob(pattern))
                if files:
                    break
            if not files:
                raise SourceError(f"embeddings: {path} holds no img_emb_*.npy, .npz or .parquet files")
            found += files
        elif path.is_file():
            found.append(path)
        else:
            raise SourceError(f"embeddings: {path} does not exist")
    return found


def open_file(path):
    """An EmbeddingFile, its size read from its header (nothing decoded)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as fp:
                shape = _array_header(fp)[0]
            return _checked(EmbeddingFile(path, "npy", *_shape(path, shape)))
        if path.suffix == ".npz":
            return _checked(_open_npz(path))
        if path.suffix == ".parquet":
            return _checked(_open_parquet(path))
    except (OSError, ValueError, zipfile.BadZipFile, pa.ArrowException) as ex:
        raise SourceError(f"embeddings: cannot read {path}: {ex}") from None
    raise SourceError(f"embeddings: {path} is not a .npy, .npz or .parquet file")


def _shape(path, shape):
    if len(shape) != 2:
        raise SourceError(f"embeddings: {path} holds an array of shape {shape}, not (rows, dimensions)")
    return int(shape[0]), int(shape[1])


def _checked(found):
    if found.dim < 2:
        raise SourceError(f"embeddings: {found.path} has vectors of {found.dim} dimension(s)")
    return found


def _open_npz(path):
    with zipfile.ZipFile(path) as archive:
        names = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
        member = next((k for k in NPZ_KEYS if k in names), None)
        if member is None:
            if len(names) != 1:
                raise SourceError(f"embeddings: {path} holds {', '.join(sorted(names)) or 'no arrays'}; "
                                  f"expected one of {', '.join(NPZ_KEYS)}")
            member = next(iter(names))
        with archive.open(names[member]) as fp:
            shape = _array_header(fp)[0]
    return EmbeddingFile(path, "npz", *_shape(path, shape), member=member)


def _open_parquet(path):
    schema = pq.read_schema(path)
    for field in schema:
        kind = field.type
        if (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)) and (
                pa.types.is_floating(kind.value_type)):
            rows = pq.ParquetFile(path).metadata.num_rows
            if pa.types.is_fixed_size_list(kind):
                dim = kind.list_size
            else:
                first = pq.ParquetFile(path).read_row_group(0, columns=[field.name]).column(0)
                dim = len(first[0].as_py() or []) if len(first) else 0
            return EmbeddingFile(path, "parquet", rows, dim, member=field.name)
    raise SourceError(f"embeddings: {path} has no column of vectors (a list of floats)")


def aligned(paths, sources):
    """The EmbeddingFiles for the metadata ``sources`` (source.open_source's,
    in build order), after checking that they match file for file and row
    for row, with one dimension throughout."""
    files = [open_file(p) for p in find_files(paths)]
    if len(files) != len(sources):
        raise SourceError(
            f"embeddings: {len(files)} embedding file(s) for {len(sources)} metadata file(s); they must be "
            "aligned one to one, in name order (img_emb_0000.npy with the first parquet file, ...)")
    for found, source in zip(files, sources):
        if found.rows != source.num_rows:
            raise SourceError(
                f"embeddings: {found.path.name} has {found.rows:,} rows but {source.path.name} has "
                f"{source.num_rows:,}: they must be aligned row by row (the same part, in the same order)")
        if found.dim != files[0].dim:
            raise SourceError(f"embeddings: {found.path.name} has {found.dim}-d vectors, "
                              f"{files[0].path.name} {files[0].dim}-d")
    return files
