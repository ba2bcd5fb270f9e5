"""Images like this one (issue 15): embeddings in the build (alignment
refusals), the vectors file and its index, near-duplicates, and the pages
and JSON that show them. Expected answers are computed here by brute force
on the embedding files, mapped to rowids through the rows' URLs and hashes,
not through the build's own code."""
import json
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasette.app import Datasette

from datasette_laion import build, sample, sample_vectors, site, vector_index

ROWS = 3_000


def _build(tmp_path, name, exact_below, rows=ROWS, files=2, seed=4, profile=None):
    parquet = tmp_path / f"{name}-parquet"
    paths = sample.generate(parquet, rows=rows, files=files, seed=seed, profile=profile)
    embeddings = tmp_path / f"{name}-embeddings"
    sample_vectors.write_embeddings(paths, embeddings)
    (tmp_path / name).mkdir()
    result = build.build(tmp_path / name / f"{name}.db", [parquet], progress=False, workers=1,
                         embeddings=[embeddings], exact_below=exact_below)
    return paths, embeddings, result


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("exact"), "exact", exact_below=10**9)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("ivf"), "ivf", exact_below=1_000)


def _truth(paths, embeddings, db_path):
    """(vectors by rowid, 0-based) from the embedding files, each row found
    by its (url, hash) in the database."""
    vectors = np.concatenate([np.load(embeddings / f"img_emb_{i:04d}.npy").astype(np.float32)
                              for i in range(len(paths))])
    keys = []
    for path in paths:
        table = pq.read_table(path, columns=["URL", "hash"])
        keys += list(zip(table.column("URL").to_pylist(), (str(h) for h in table.column("hash").to_pylist())))
    position = {key: i for i, key in enumerate(keys)}
    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    rows = conn.execute("select url, hash from images order by rowid").fetchall()
    conn.close()
    by_rowid = vectors[[position[(url, h)] for url, h in rows]]
    return by_rowid / np.linalg.norm(by_rowid, axis=1, keepdims=True)


def _datasette(result):
    return Datasette(immutables=[str(result.path)], metadata=site.metadata(), settings=site.settings())


def _exact_top(vectors, rowid, k):
    scores = vectors @ vectors[rowid - 1]
    scores[rowid - 1] = -2
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(i) + 1 for i in order], scores[order]


# ------------------------------------------------------------ the build


def test_alignment_refusals(tmp_path, exact):
    paths, embeddings, _ = exact
    out = tmp_path / "x.db"
    out.write_bytes(b"previous")
    parquet = paths[0].parent
    short = tmp_path / "short"
    short.mkdir()
    first = np.load(embeddings / "img_emb_0000.npy")
    np.save(short / "img_emb_0000.npy", first[:-1])
    np.save(short / "img_emb_0001.npy", np.load(embeddings / "img_emb_0001.npy"))
    one = tmp_path / "one"
    one.mkdir()
    np.save(one / "img_emb_0000.npy", first)
    wide = tmp_path / "wide"
    wide.mkdir()
    np.save(wide / "img_emb_0000.npy", first)
    np.save(wide / "img_emb_0001.npy", np.zeros((len(np.load(embeddings / "img_emb_0001.npy")), 512), np.float16))
    empty = tmp_path / "empty"
    empty.mkdir()
    for where, message in (
        (short, f"embeddings: img_emb_0000.npy has {len(first) - 1:,} rows but {paths[0].name} has {len(first):,}: "
                "they must be aligned row by row"),
        (one, "embeddings: 1 embedding file(s) for 2 metadata file(s)"),
        (wide, "embeddings: img_emb_0001.npy has 512-d vectors, img_emb_0000.npy 768-d"),
        (empty, "holds no img_emb_*.npy, .npz or .parquet files"),
    ):
        with pytest.raises(build.BuildError, match="embeddings") as raised:
            build.build(out, [parquet], progress=False, workers=1, embeddings=[where])
        assert message in str(raised.value)
        assert out.read_bytes() == b"previous" and not out.with_suffix(".vectors").exists()


def test_npz_and_parquet_embeddings_are_read(tmp_path, exact):
    """DataComp's .npz (l14_img) and a parquet column of vectors build the
    same vectors file as the .npy files."""
    paths, embeddings, result = exact
    arrays = [np.load(embeddings / f"img_emb_{i:04d}.npy") for i in range(len(paths))]
    npz, par = tmp_path / "npz", tmp_path / "par"
    npz.mkdir()
    par.mkdir()
    import pyarrow as pa

    for i, array in enumerate(arrays):
        np.savez(npz / f"shard-{i:04d}.npz", l14_img=array, l14_txt=np.zeros_like(array))
        column = pa.FixedSizeListArray.from_arrays(pa.array(array.astype(np.float32).ravel()), array.shape[1])
        pq.write_table(pa.table({"image_embedding": column}), par / f"emb-{i:04d}.parquet")
    want = np.asarray(vector_index.matrix(result.vectors, vector_index.read_header(result.vectors)))
    for where in (npz, par):
        out = tmp_path / f"{where.name}.db"
        built = build.build(out, [paths[0].parent], progress=False, workers=1, embeddings=[where],
                            exact_below=10**9)
        got = np.asarray(vector_index.matrix(built.vectors, vector_index.read_header(built.vectors)))
        assert np.array_equal(got, want), where.name


def test_vectors_file_holds_the_kept_rows_in_rowid_order(exact):
    paths, embeddings, result = exact
    truth = _truth(paths, embeddings, result.path)
    header = vector_index.read_header(result.vectors)
    stored = np.asarray(vector_index.matrix(result.vectors, header), dtype=np.float32)
    assert header.rows == len(truth) == result.rows and header.dim == 768 and header.index == "exact"
    assert np.abs(stored - truth).max() < 2e-3  # float16
    conn = sqlite3.connect(result.path)
    info = dict(conn.execute("select key, value from build_info"))
    assert info["vectors_build_id"] == header.build_id and info["vectors_index"] == "exact"


def test_planted_near_duplicates_are_found(exact):
    paths, embeddings, result = exact
    planted = json.loads((embeddings / sample_vectors.PLANTED_FILE).read_text())
    assert planted
    truth = _truth(paths, embeddings, result.path)
    keys_rowid = {}
    conn = sqlite3.connect(result.path)
    for rowid, url, h in conn.execute("select rowid, url, hash from images"):
        keys_rowid[(url, h)] = rowid
    offsets = np.cumsum([0] + [pq.ParquetFile(p).metadata.num_rows for p in paths])
    keys = []
    for path in paths:
        table = pq.read_table(path, columns=["URL", "hash"])
        keys += list(zip(table.column("URL").to_pylist(), (str(h) for h in table.column("hash").to_pylist())))
    cluster = dict(conn.execute("select rowid, cluster from near_duplicates"))
    count = dict(conn.execute("select rowid, count from near_duplicates"))
    for file, row, original_file, original_row in planted:
        a = keys_rowid[keys[offsets[file] + row]]
        b = keys_rowid[keys[offsets[original_file] + original_row]]
        assert float(truth[a - 1] @ truth[b - 1]) >= 0.94
        assert cluster[a] == cluster[b] <= min(a, b)  # one cluster, named by its lowest rowid
        assert count[a] >= 1 and count[b] >= 1
    # every counted pair is a real one: a row's count is its rows at cosine >= 0.94 (exact: one list)
    for rowid, n in list(count.items())[:50]:
        scores = truth @ truth[rowid - 1]
        assert int((scores >= 0.94).sum()) - 1 == n, rowid
    info = dict(conn.execute("select key, value from build_info"))
    assert int(info["near_duplicate_rows"]) == len(count)
    assert int(info["near_duplicate_clusters"]) == len(set(cluster.values()))


def test_a_build_without_embeddings_removes_the_old_vectors_file(tmp_path):
    paths = sample.generate(tmp_path / "p", rows=300, files=1, seed=1)
    sample_vectors.write_embeddings(paths, tmp_path / "e")
    out = tmp_path / "x.db"
    first = build.build(out, [tmp_path / "p"], progress=False, workers=1, embeddings=[tmp_path / "e"])
    assert first.vectors.exists()
    build.build(out, [tmp_path / "p"], progress=False, workers=1)
    assert not first.vectors.exists()


# ------------------------------------------------------------ the site


@pytest.mark.asyncio
async def test_similar_json_equals_exact_brute_force(exact):
    paths, embeddings, result = exact
    truth = _truth(paths, embeddings, result.path)
    ds = _datasette(result)
    for rowid in (1, 17, 400, result.rows):
        data = (await ds.client.get(f"/exact/images/{rowid}/similar.json?_size=10&_shape=arrays")).json()
        want, scores = _exact_top(truth, rowid, 10)
        assert [r[0] for r in data["rows"]] == want, rowid
        assert np.allclose([r[1] for r in data["rows"]], scores, atol=2e-3)
        assert data["columns"][:3] == ["rowid", "cosine", "near_duplicate"]


@pytest.mark.asyncio
async def test_the_index_finds_what_brute_force_finds(indexed):
    paths, embeddings, result = indexed
    header = vector_index.read_header(result.vectors)
    assert header.index.startswith("faiss OPQ") and header.index_bytes > 0
    truth = _truth(paths, embeddings, result.path)
    ds = _datasette(result)
    hits = total = 0
    for rowid in range(1, result.rows, result.rows // 40):
        data = (await ds.client.get(f"/ivf/images/{rowid}/similar.json?_size=10&_shape=array")).json()
        want, _ = _exact_top(truth, rowid, 10)
        hits += len({r["rowid"] for r in data} & set(want))
        total += 10
    assert hits / total >= 0.95


def _addresses(lists, i):
    """Where list ``i``'s codes and ids are in memory."""
    import faiss

    codes = faiss.rev_swig_ptr(lists.get_codes(i), lists.list_size(i) * lists.code_size)
    ids = faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i))
    return codes.__array_interface__["data"][0], ids.__array_interface__["data"][0]


def test_the_index_is_read_in_place_not_copied(indexed):
    """The index's PQ codes and ids stay in the vectors file's pages (faiss
    reads it zero-copy, IO_FLAG_MMAP_IFC): opening costs next to no memory,
    and the server's workers share the pages. If faiss stops honouring the
    flag for this index type, each worker would hold a whole copy (1.2 GB at
    12M rows): this fails then, loudly."""
    import faiss

    _, _, result = indexed
    vectors = vector_index.Vectors(result.vectors)
    lists = faiss.extract_index_ivf(vectors.index).invlists
    low, high = vectors._mapped.ctypes.data, vectors._mapped.ctypes.data + vectors._mapped.size
    listed = [i for i in range(lists.nlist) if lists.list_size(i)]
    assert sum(lists.list_size(i) for i in listed) == vectors.header.rows
    for i in listed:
        codes, ids = _addresses(lists, i)
        assert low <= codes < high and low <= ids < high, f"list {i} was copied out of the vectors file"
    # and the mapped index answers as a copied one does
    copied = faiss.deserialize_index(np.array(vectors._mapped))
    faiss.extract_index_ivf(copied).nprobe = faiss.extract_index_ivf(vectors.index).nprobe
    query = vectors.vector(7)[None]
    assert np.array_equal(vectors.index.search(query, 20)[1], copied.search(query, 20)[1])


@pytest.mark.asyncio
async def test_json_shapes_and_errors(exact):
    _, _, result = exact
    ds = _datasette(result)
    arrays = (await ds.client.get("/exact/images/5/similar.json?_size=3")).json()  # Datasette's default shape
    assert arrays["ok"] and len(arrays["rows"]) == 3 and arrays["rows"][0][:1] == [arrays["rows"][0][0]]
    objects = (await ds.client.get("/exact/images/5/similar.json?_size=3&_shape=objects")).json()
    assert set(objects["rows"][0]) >= {"rowid", "cosine", "url"} and objects["rows"][0]["rowid"] == arrays["rows"][0][0]
    assert "near_duplicates" in objects and objects["near_duplicate_threshold"] == 0.94
    array = (await ds.client.get("/exact/images/5/similar.json?_shape=array")).json()
    assert len(array) == 24 and array[0]["rowid"] == objects["rows"][0]["rowid"]
    for query, status in (("_size=0", 400), ("_size=101", 400), ("_size=x", 400)):
        response = await ds.client.get(f"/exact/images/5/similar.json?{query}")
        assert response.status_code == status and "_size" in response.json()["error"]
    missing = await ds.client.get(f"/exact/images/{result.rows + 1}/similar.json")
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_pages_show_similar_images_with_safe_mode(exact):
    _, _, result = exact
    ds = _datasette(result)
    conn = sqlite3.connect(result.path)
    rowid = conn.execute("select rowid from near_duplicates order by count desc limit 1").fetchone()[0]
    page = await ds.client.get(f"/exact/images/{rowid}/similar")
    assert page.status_code == 200 and page.text.count('class="laion-thumb') >= 20
    data = (await ds.client.get(f"/exact/images/{rowid}/similar.json?_shape=array")).json()
    unsafe = [r for r in data if r["punsafe"] is not None and r["punsafe"] >= 0.5]
    assert page.text.count("laion-hidden") >= len(unsafe)
    assert "near-duplicate" in page.text
    image = (await ds.client.get(f"/exact/images/{rowid}")).text
    assert 'id="similar"' in image and 'id="near-duplicates"' in image
    assert f"/exact/images/{rowid}/similar" in image


@pytest.mark.asyncio
async def test_without_vectors_the_pages_say_so(exact, tmp_path):
    paths, _, result = exact
    plain = build.build(tmp_path / "plain.db", [paths[0].parent], progress=False, workers=1)
    ds = _datasette(plain)
    response = await ds.client.get("/plain/images/3/similar.json")
    assert response.status_code == 404 and "built without image embeddings" in response.json()["error"]
    image = await ds.client.get("/plain/images/3")
    assert image.status_code == 200 and 'id="similar"' not in image.text
    # a vectors file of another build is refused
    other = tmp_path / "other"
    other.mkdir()
    copy = other / "exact.db"
    copy.write_bytes(result.path.read_bytes())
    header = vector_index.read_header(result.vectors)
    data = bytearray(result.vectors.read_bytes())
    data[:vector_index.HEADER_SPACE] = vector_index.Header(**{**header.__dict__, "build_id": "0" * 32}).encode()
    copy.with_suffix(".vectors").write_bytes(bytes(data))
    response = await _datasette(type(result)(**{**result.__dict__, "path": copy})).client.get(
        "/exact/images/3/similar.json")
    assert response.status_code == 404 and "belongs to another build" in response.json()["error"]


@pytest.mark.asyncio
async def test_stats_and_mywork_use_the_embeddings(exact, tmp_path):
    paths, embeddings, result = exact
    ds = _datasette(result)
    conn = sqlite3.connect(result.path)
    info = dict(conn.execute("select key, value from build_info"))
    stats = (await ds.client.get("/-/laion/stats.json")).json()
    nd = stats["near_duplicates"]
    assert (nd["rows"], nd["clusters"], nd["copies"]) == (
        int(info["near_duplicate_rows"]), int(info["near_duplicate_clusters"]), int(info["near_duplicate_copies"]))
    assert 'id="near-duplicates"' in (await ds.client.get("/-/laion/stats")).text
    answer = (await ds.client.get("/-/laion/mywork.json?q=dog&kind=name")).json()
    like, examples = answer["images_like_these"], {e["rowid"] for e in answer["examples"]}
    assert len(like) == 24 and not {r["rowid"] for r in like} & examples
    # the nearest rows to the examples' mean vector, by brute force
    truth = _truth(paths, embeddings, result.path)
    mean = truth[[r - 1 for r in examples]].sum(axis=0)
    scores = truth @ (mean / np.linalg.norm(mean))
    scores[[r - 1 for r in examples]] = -2
    assert [r["rowid"] for r in like] == [int(i) + 1 for i in np.argsort(-scores, kind="stable")[:24]]
    page = (await ds.client.get("/-/laion/mywork?q=dog&kind=name")).text
    assert 'id="images-like-these"' in page
    plain = build.build(tmp_path / "plain.db", [paths[0].parent], progress=False, workers=1)
    ds = _datasette(plain)
    assert "images_like_these" not in (await ds.client.get("/-/laion/mywork.json?q=dog&kind=name")).json()
    assert (await ds.client.get("/-/laion/stats.json")).json()["near_duplicates"] is None


def test_sample_embeddings_have_no_false_near_duplicates(exact):
    """Two different pictures of one topic stay under 0.94: the only pairs
    at 0.94 or more are the planted ones and repeated URLs."""
    paths, embeddings, result = exact
    truth = _truth(paths, embeddings, result.path)
    conn = sqlite3.connect(result.path)
    urls = [u for (u,) in conn.execute("select url from images order by rowid")]
    planted = json.loads((embeddings / sample_vectors.PLANTED_FILE).read_text())
    scores = truth @ truth.T
    np.fill_diagonal(scores, -1)
    a, b = np.nonzero(np.triu(scores >= 0.94))
    repeated = sum(urls[i] == urls[j] for i, j in zip(a.tolist(), b.tolist()))
    assert len(a) - repeated <= 3 * len(planted)  # planted copies (and copies of copies)
