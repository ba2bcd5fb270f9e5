"""vector_build.py: the vectors file and its index written in bounded memory
(read with pread, embedding files streamed, inverted lists filled once),
checked against numpy's memory maps and faiss's own ``add``."""
import zipfile

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasette_laion import embeddings, vector_build, vector_index
from datasette_laion.source import SourceError


def _unit(rows, dim, seed=0):
    data = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def _raw(tmp_path, data, offset=0):
    path = tmp_path / "rows.f16"
    path.write_bytes(b"x" * offset + data.astype(np.float16).tobytes())
    return path


def test_row_reader_reads_what_a_map_holds(tmp_path):
    data = _unit(1000, 24)
    path = _raw(tmp_path, data, offset=vector_index.HEADER_SPACE)
    mapped = np.memmap(path, dtype=np.float16, mode="r", offset=vector_index.HEADER_SPACE, shape=data.shape)
    picks = np.array([0, 1, 2, 3, 10, 500, 501, 998, 999])
    with vector_build.RowReader(path, 1000, 24) as reader:
        assert len(reader) == 1000
        assert np.array_equal(reader.block(0, 1000), mapped.astype(np.float32))
        assert np.array_equal(reader.block(37, 41), mapped[37:41].astype(np.float32))
        assert np.array_equal(reader.take(picks), mapped[picks].astype(np.float32))
        assert reader.take([]).shape == (0, 24)
        with pytest.raises(OSError, match="ended before row"):
            reader.block(990, 1001)


def test_row_reader_takes_large_samples_in_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_build, "TAKE_ROWS", 7)
    data = _unit(300, 8)
    path = _raw(tmp_path, data)
    picks = np.sort(np.random.default_rng(1).choice(300, size=100, replace=False))
    with vector_build.RowReader(path, 300, 8, offset=0) as reader:
        assert np.array_equal(reader.take(picks), data[picks].astype(np.float16).astype(np.float32))


def _npy(path, data):
    np.save(path, data)
    return embeddings.open_file(path)


def test_embedding_files_stream_in_blocks_as_read_whole(tmp_path):
    data = _unit(103, 16, seed=2) * 3  # not of unit length: blocks normalise
    data[5] = 0
    data[9, 3] = np.nan
    want = embeddings.unit_rows(data)
    np.savez(tmp_path / "shard.npz", l14_img=data.astype(np.float16), b32_img=np.zeros((103, 4)))
    table = pa.table({"embedding": pa.array(list(data), type=pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "shard.parquet", row_group_size=40)
    for found in (_npy(tmp_path / "img_emb_0.npy", data), embeddings.open_file(tmp_path / "shard.npz"),
                  embeddings.open_file(tmp_path / "shard.parquet")):
        blocks = list(found.blocks(25))
        assert [first for first, _ in blocks] == [0, 25, 50, 75, 100]
        joined = np.concatenate([block for _, block in blocks])
        tolerance = 1e-3 if found.kind == "npz" else 1e-6  # the npz holds float16
        assert np.allclose(joined, want, atol=tolerance), found.kind
        assert not joined[5].any() and not joined[9].any()


def test_embedding_files_refuse_what_cannot_be_streamed(tmp_path):
    with pytest.raises(SourceError, match="Fortran order"):
        list(_npy(tmp_path / "f.npy", np.asfortranarray(_unit(10, 4))).blocks(4))
    np.save(tmp_path / "t.npy", _unit(10, 4))
    found = embeddings.open_file(tmp_path / "t.npy")
    with open(tmp_path / "t.npy", "r+b") as fp:
        fp.truncate(fp.seek(0, 2) - 10)
    with pytest.raises(SourceError, match="ends before row 10"):
        list(found.blocks(4))
    np.save(tmp_path / "o.npy", np.array([["a", "b"]], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="not numbers"):
        embeddings.open_file(tmp_path / "o.npy")
    with zipfile.ZipFile(tmp_path / "s.npz", "w") as archive:
        archive.writestr("l14_img.npy", b"not an array")
    with pytest.raises(SourceError, match="cannot read"):
        embeddings.open_file(tmp_path / "s.npz")


@pytest.mark.parametrize("region_rows", [1, 4, 5, 23, 1000])
def test_write_vectors_puts_kept_rows_at_their_rowids(tmp_path, monkeypatch, region_rows):
    monkeypatch.setattr(vector_build, "READ_ROWS", 6)
    monkeypatch.setattr(vector_build, "TAKE_ROWS", 3)  # a region written back in parts
    first, second = _unit(20, 8, seed=3), _unit(15, 8, seed=4)
    files = [_npy(tmp_path / "a.npy", first), _npy(tmp_path / "b.npy", second)]
    source = np.concatenate([first, second])
    # rows kept in a sorted build's order: rowid i holds source row positions[i]
    positions = np.random.default_rng(5).permutation(35)[:23]
    seen = []
    rows, dim = vector_build.write_vectors(tmp_path / "v", files, positions, seen.append, region_rows=region_rows)
    assert (rows, dim) == (23, 8) and sum(seen) == 35 + 23  # source rows streamed, then kept rows ordered
    assert (tmp_path / "v").stat().st_size == vector_index.HEADER_SPACE + 23 * 8 * 2
    stored = np.memmap(tmp_path / "v", dtype=np.float16, mode="r", offset=vector_index.HEADER_SPACE, shape=(23, 8))
    assert np.array_equal(stored, source[positions].astype(np.float16))


def test_write_vectors_with_no_rows_kept(tmp_path):
    files = [_npy(tmp_path / "a.npy", _unit(10, 8))]
    seen = []
    assert vector_build.write_vectors(tmp_path / "v", files, np.zeros(0, dtype=np.int64), seen.append) == (0, 8)
    assert sum(seen) == 10 and (tmp_path / "v").stat().st_size == vector_index.HEADER_SPACE


def test_the_index_equals_faiss_adding_the_rows(tmp_path):
    rows, dim = 6000, 32
    data = _unit(rows, dim, seed=6)
    path = _raw(tmp_path, data)
    with vector_build.RowReader(path, rows, dim, offset=0) as reader:
        index, lists, description = vector_build.build_index(reader, tmp_path / "codes", exact_below=0)
    assert not (tmp_path / "codes").exists()
    assert index.ntotal == rows and description.startswith("faiss OPQ32,IVF")
    ivf = faiss.extract_index_ivf(index)
    assert np.array_equal(np.bincount(lists, minlength=ivf.nlist),
                          [ivf.invlists.list_size(n) for n in range(ivf.nlist)])
    reference = faiss.clone_index(index)
    reference.reset()
    reference.add(data.astype(np.float16).astype(np.float32))
    theirs = faiss.extract_index_ivf(reference)
    for number in range(ivf.nlist):
        size = ivf.invlists.list_size(number)
        assert size == theirs.invlists.list_size(number)
        ours_ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(number), size).copy()
        assert np.array_equal(ours_ids, faiss.rev_swig_ptr(theirs.invlists.get_ids(number), size))
        assert np.array_equal(lists[ours_ids], np.full(size, number))
        code_bytes = size * ivf.code_size
        assert np.array_equal(faiss.rev_swig_ptr(ivf.invlists.get_codes(number), code_bytes),
                              faiss.rev_swig_ptr(theirs.invlists.get_codes(number), code_bytes))


def test_a_small_database_has_no_index(tmp_path):
    path = _raw(tmp_path, _unit(50, 8))
    seen = []
    with vector_build.RowReader(path, 50, 8, offset=0) as reader:
        assert vector_build.build_index(reader, tmp_path / "codes", progress=seen.append) == (None, None, "exact")
    assert seen == [50]


def _vm_flags(path):
    """VmFlags of this process's mapping of ``path`` (/proc/self/smaps)."""
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            return next(x.split(":", 1)[1].split() for x in lines[i + 1:] if x.startswith("VmFlags:"))
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_RANDOM"), reason="no madvise here")
def test_the_site_maps_the_vectors_for_random_reads(tmp_path):
    """A query reads a few hundred scattered rows: readahead around each
    would fill the page cache with vectors nobody asked for."""
    data = _unit(100, 8)
    path = _raw(tmp_path, data, offset=vector_index.HEADER_SPACE)
    header = vector_index.Header(rows=100, dim=8, build_id="", index="exact")
    rows = vector_index.matrix(path, header)
    assert np.array_equal(rows, data.astype(np.float16)) and not rows.flags.writeable
    assert "rr" in _vm_flags(path)
    del rows
    scanned = vector_index.matrix(path, header, random=False)
    assert "rr" not in _vm_flags(path)
    del scanned
