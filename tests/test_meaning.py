"""Search by meaning (``_searchmode=meaning``, the clip extra): offered only
with the extra and a database built with embeddings; the exact nearest rows
to the text encoder's embedding of the words, through the search's own
pages; a 400 that says what is missing, otherwise.

The text encoder is a tiny open_clip model made here, at test time (random
weights, saved in a temporary directory: nothing is downloaded), and the
database's vectors are of its dimension. Expected answers are computed here,
with open_clip itself and numpy over the vectors file, not through the
plugin's code. The tests that need the extra skip without it; those of what
happens without it (simulated) run either way."""
import asyncio
import dataclasses
import json
import sqlite3
from urllib.parse import quote

import numpy as np
import pytest
from datasette.app import Datasette

from datasette_laion import build, meaning, meaning_search, sample, sample_vectors, site, vector_index

DIM = 32  # the tiny model's embedding, and the test database's vectors
ROWS = 1_500
TINY = "laion-test-tiny"  # the tiny model's name (its config file's name)
NARROW = "laion-test-narrow"  # the same, with 16-d embeddings: not the database's
QUERY = "a painting of a lighthouse"


def _model_config(embed_dim):
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    """(database with DIM-d vectors, database without): BuildResults."""
    tmp = tmp_path_factory.mktemp("meaning")
    paths = sample.generate(tmp / "parquet", rows=ROWS, files=1, seed=5)
    sample_vectors.write_embeddings(paths, tmp / "embeddings",
                                    shape=dataclasses.replace(sample_vectors.sample_shape(), dim=DIM))
    (tmp / "meaning").mkdir()
    (tmp / "plain").mkdir()
    with_vectors = build.build(tmp / "meaning" / "meaning.db", [tmp / "parquet"], progress=False, workers=1,
                               embeddings=[tmp / "embeddings"], exact_below=10**9)
    plain = build.build(tmp / "plain" / "plain.db", [tmp / "parquet"], progress=False, workers=1)
    return with_vectors, plain


@pytest.fixture(scope="module")
def open_clip():
    """open_clip, or a skip without the clip extra."""
    if not meaning.available():
        pytest.skip("search by meaning needs the clip extra: pip install '.[clip]'")
    return meaning.import_open_clip()


@pytest.fixture(scope="module")
def models(open_clip, tmp_path_factory):
    """{name: (config path, checkpoint path)} of the tiny models, random
    weights (seeded), made and saved here."""
    import torch

    tmp = tmp_path_factory.mktemp("models")
    made = {}
    for name, embed_dim in ((TINY, DIM), (NARROW, 16)):
        config = tmp / f"{name}.json"
        config.write_text(json.dumps(_model_config(embed_dim)))
        open_clip.add_model_config(config)
        torch.manual_seed(0)
        checkpoint = tmp / f"{name}.pt"
        torch.save(open_clip.create_model(name).state_dict(), checkpoint)
        made[name] = (config, checkpoint)
    return made


def _datasette(result, **plugin):
    metadata = site.metadata()
    metadata.setdefault("plugins", {}).setdefault("datasette-laion", {}).update(plugin)
    return Datasette(immutables=[str(result.path)], metadata=metadata, settings=site.settings())


def _with_model(result, models, name=TINY, **more):
    config, checkpoint = models[name]
    return _datasette(result, clip_model_config=str(config), clip_pretrained=str(checkpoint), **more)


def _url(database, fmt="json", text=QUERY, **args):
    query = "&".join(f"{k}={quote(str(v))}" for k, v in {"_search": text, "_searchmode": "meaning", **args}.items())
    return f"/{database}/images{'.' + fmt if fmt else ''}?{query}"


def _nearest(open_clip, models, result, text, k):
    """[(rowid, cosine)] of the ``k`` rows nearest ``text`` by brute force:
    the tiny model's own text embedding against every stored vector."""
    import torch

    config, checkpoint = models[TINY]
    model = open_clip.create_model(TINY, pretrained=str(checkpoint))
    model.eval()
    with torch.no_grad():
        query = model.encode_text(open_clip.get_tokenizer(TINY)([text]))[0].float().numpy()
    query /= np.linalg.norm(query)
    header = json.loads(result.vectors.read_bytes()[12:vector_index.HEADER_SPACE].rstrip(b"\0"))
    stored = np.memmap(result.vectors, dtype=np.float16, mode="r", offset=vector_index.HEADER_SPACE,
                       shape=(header["rows"], header["dim"]))
    scores = np.asarray(stored, dtype=np.float32) @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i) + 1, float(scores[i])) for i in order]


# ------------------------------------------------------------ offered, or not


@pytest.mark.asyncio
async def test_not_offered_without_the_extra_or_vectors(databases, monkeypatch):
    with_vectors, plain = databases
    page = await _datasette(plain).client.get("/plain/images?_search=dog")
    assert page.status_code == 200 and 'value="meaning"' not in page.text
    assert 'type="checkbox" name="_searchmode" value="raw"' in page.text  # the words search's own option stays
    monkeypatch.setattr(meaning, "available", lambda: False)
    page = await _datasette(with_vectors).client.get("/meaning/images?_search=dog")
    assert page.status_code == 200 and 'value="meaning"' not in page.text


@pytest.mark.asyncio
async def test_offered_with_the_extra_and_vectors(databases, models):
    with_vectors, _ = databases
    ds = _with_model(with_vectors, models)
    page = (await ds.client.get("/meaning/images?_search=dog")).text
    assert '<option value="meaning" title="images nearest in meaning to the words">meaning</option>' in page
    assert '<option value="default" title="every word, &#34;a phrase&#34;" selected>' in page
    assert 'type="checkbox" name="_searchmode"' not in page  # advanced syntax is one of the choices
    page = (await ds.client.get(_url("meaning", fmt=None))).text
    assert 'value="meaning" title="images nearest in meaning to the words" selected>' in page and "Images nearest in meaning to" in page
    assert "most relevant" not in page  # no other order to offer


# ------------------------------------------------------------ answers


@pytest.mark.asyncio
async def test_the_exact_nearest_rows_to_the_words(databases, models, open_clip):
    with_vectors, _ = databases
    ds = _with_model(with_vectors, models)
    want = _nearest(open_clip, models, with_vectors, QUERY, 20)
    data = (await ds.client.get(_url("meaning", _size=20))).json()
    assert data["search_mode"] == "meaning" and data["order"] == "nearest in meaning"
    assert data["human_description_en"] == f"nearest in meaning to {QUERY!r}"
    assert data["columns"][:3] == ["rowid", "cosine", "url"]
    assert [r[0] for r in data["rows"]] == [rowid for rowid, _ in want]
    assert np.allclose([r[1] for r in data["rows"]], [c for _, c in want], atol=1e-5)
    assert data["filtered_table_rows_count"] is None and data["next_url"]
    objects = (await ds.client.get(_url("meaning", _size=3, _shape="objects"))).json()["rows"]
    assert [r["rowid"] for r in objects] == [rowid for rowid, _ in want[:3]]
    assert set(objects[0]) >= {"rowid", "url", "text", "aesthetic", "punsafe", "cosine"}
    # a words search says its mode too
    words = (await ds.client.get("/meaning/images.json?_search=dog")).json()
    assert words["search_mode"] == "default" and "cosine" not in words["columns"]


@pytest.mark.asyncio
async def test_filters_pages_facets_and_csv(databases, models, open_clip):
    with_vectors, _ = databases
    ds = _with_model(with_vectors, models)
    candidates = _nearest(open_clip, models, with_vectors, QUERY, meaning_search.CANDIDATES)
    conn = sqlite3.connect(with_vectors.path)
    aesthetic = dict(conn.execute("select rowid, aesthetic from images"))
    threshold = sorted(aesthetic.values())[len(aesthetic) // 2]
    want = [rowid for rowid, _ in candidates if aesthetic[rowid] >= threshold]
    got, url = [], _url("meaning", _size=25, aesthetic__gte=threshold)
    for _ in range(3):
        data = (await ds.client.get(url)).json()
        got += [r[0] for r in data["rows"]]
        url = data["next_url"].replace("http://localhost", "")
    assert got == want[:75]
    assert "less those the filters leave out" in data["notes"][0]
    # Datasette's own filters too, and facets over the candidates that pass them
    data = (await ds.client.get(_url("meaning", _size=5, _where="width > 600", _facet="domain_id"))).json()
    width = dict(conn.execute("select rowid, width from images"))
    assert [r[0] for r in data["rows"]] == [r for r, _ in candidates if width[r] > 600][:5]
    counted = sum(r["count"] for r in data["facet_results"]["domain_id"]["results"])
    assert 0 < counted <= meaning_search.CANDIDATES
    text = (await ds.client.get(_url("meaning", fmt="csv", _size=4))).text
    lines = text.strip().splitlines()
    assert lines[0].startswith("rowid,cosine,url,") and [int(line.split(",")[0]) for line in lines[1:]] == [
        r for r, _ in candidates[:4]]


@pytest.mark.asyncio
async def test_any_words_are_searched_and_shown_escaped(databases, models):
    with_vectors, _ = databases
    ds = _with_model(with_vectors, models)
    for text in ("<script>alert(1)</script>", "\x00 nul", "😀🐕", "!!!", "x" * 1000, 'OR NOT "'):
        data = await ds.client.get(_url("meaning", text=text, _size=3))
        assert data.status_code == 200 and len(data.json()["rows"]) == 3, text
        page = await ds.client.get(_url("meaning", fmt=None, text=text, _size=3))
        assert page.status_code == 200 and "<script>alert(1)" not in page.text


@pytest.mark.asyncio
async def test_the_gallery_keeps_safe_mode(databases, models):
    with_vectors, _ = databases
    ds = _with_model(with_vectors, models)
    rows = (await ds.client.get(_url("meaning", _size=200, _shape="objects"))).json()["rows"]
    unsafe = [r for r in rows if r["punsafe"] is not None and r["punsafe"] >= 0.5]
    assert unsafe, "the sample has unsafe rows among 200"
    page = (await ds.client.get(_url("meaning", fmt=None, _size=200, _view="gallery"))).text
    assert page.count("laion-hidden") == len(unsafe) and "cosine 0." in page


@pytest.mark.asyncio
async def test_the_model_is_loaded_once_under_concurrent_requests(databases, models, monkeypatch):
    with_vectors, _ = databases
    monkeypatch.setattr(meaning, "_encoders", {})
    loads, original = [], meaning._load

    def counting(settings):
        loads.append(settings)
        import time

        time.sleep(0.3)  # the others arrive while it loads
        return original(settings)

    monkeypatch.setattr(meaning, "_load", counting)
    ds = _with_model(with_vectors, models)
    responses = await asyncio.gather(*(ds.client.get(_url("meaning", text=f"{QUERY} {i}")) for i in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert len(loads) == 1
    await ds.client.get(_url("meaning"))
    assert len(loads) == 1


@pytest.mark.asyncio
async def test_a_searchs_next_pages_do_not_encode_it_again(databases, models, monkeypatch):
    with_vectors, _ = databases
    encoded, original = [], meaning.Encoder._encode

    def counting(self, text):
        encoded.append(text)
        return original(self, text)

    monkeypatch.setattr(meaning.Encoder, "_encode", counting)
    ds = _with_model(with_vectors, models)
    text = f"{QUERY}, once"
    first = (await ds.client.get(_url("meaning", text=text, _size=5))).json()
    second = (await ds.client.get(first["next_url"].replace("http://localhost", ""))).json()
    assert encoded.count(text) == 1 and len(second["rows"]) == 5
    assert not {r[0] for r in first["rows"]} & {r[0] for r in second["rows"]}


# ------------------------------------------------------------ refusals


@pytest.mark.asyncio
async def test_without_vectors_a_400_says_so(databases):
    _, plain = databases
    response = await _datasette(plain).client.get(_url("plain"))
    assert response.status_code == 400
    assert "was built without --embeddings" in response.json()["error"]


@pytest.mark.asyncio
async def test_without_the_extra_a_400_says_how_to_install_it(databases, monkeypatch):
    with_vectors, _ = databases
    monkeypatch.setattr(meaning, "available", lambda: False)
    ds = _datasette(with_vectors)
    response = await ds.client.get(_url("meaning"))
    assert response.status_code == 400
    assert "pip install 'datasette-laion[clip]'" in response.json()["error"]
    assert "built without" not in response.json()["error"]
    page = await ds.client.get(_url("meaning", fmt=None))
    assert page.status_code == 400 and "datasette-laion[clip]" in page.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "args,message",
    [
        ({"text": "  "}, "give the words to search by meaning in _search"),
        ({"text": ""}, "give the words to search by meaning in _search"),
        ({"_sort": "width"}, "_sort: a search by meaning is ordered nearest in meaning first"),
        ({"_sort_desc": "aesthetic"}, "_sort_desc: a search by meaning is ordered nearest in meaning first"),
        ({"_sort": "relevance"}, "_sort: a search by meaning"),
        ({"_order": "relevance"}, "_order=relevance: a search by meaning"),
        ({"_next": "55"}, "_next: '55' is not a page token of this search by meaning"),
        ({"cosine__gt": "0.5"}, "images has no column 'cosine'"),
    ],
)
async def test_what_cannot_be_honoured_is_a_400(databases, args, message):
    with_vectors, _ = databases
    response = await _datasette(with_vectors).client.get(_url("meaning", **args))
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.asyncio
async def test_a_model_of_another_dimension_is_a_400(databases, models):
    with_vectors, _ = databases
    response = await _with_model(with_vectors, models, name=NARROW).client.get(_url("meaning"))
    assert response.status_code == 400
    assert ("the text encoder (open_clip laion-test-narrow (laion-test-narrow.pt)) makes 16-d vectors but the image "
            "vectors of meaning are 32-d") in response.json()["error"]


@pytest.mark.asyncio
async def test_weights_that_cannot_be_loaded_are_a_503_that_says_so(databases, models, tmp_path):
    with_vectors, _ = databases
    config, _ = models[TINY]
    ds = _datasette(with_vectors, clip_model_config=str(config), clip_pretrained=str(tmp_path / "nowhere.pt"))
    response = await ds.client.get(_url("meaning"))
    assert response.status_code == 503
    assert "the text encoder open_clip laion-test-tiny (nowhere.pt) could not be loaded" in response.json()["error"]
    assert response.headers["retry-after"] == str(meaning.RETRY_AFTER)
    page = await ds.client.get(_url("meaning", fmt="", _size=5))
    assert page.status_code == 503  # and a way on: the same words searched in the captions
    assert f'href="/meaning/images?_search={QUERY.replace(" ", "+")}&amp;_size=5"' in page.text


@pytest.mark.asyncio
async def test_a_failed_load_is_remembered_until_it_may_be_tried_again(databases, models, tmp_path, monkeypatch):
    with_vectors, _ = databases
    config, weights = models[TINY]
    missing = tmp_path / "not-yet.pt"
    ds = _datasette(with_vectors, clip_model_config=str(config), clip_pretrained=str(missing))
    loads, load = [], meaning._load
    monkeypatch.setattr(meaning, "_load", lambda settings: loads.append(settings) or load(settings))
    clock = [1000.0]
    monkeypatch.setattr(meaning, "monotonic", lambda: clock[0])
    first = await ds.client.get(_url("meaning"))
    assert first.status_code == 503 and len(loads) == 1
    # the weights arrive, but the failure is remembered: answered at once, not loaded again
    missing.write_bytes(weights.read_bytes())
    clock[0] += meaning.RETRY_AFTER - 100
    for fmt in ("", "json", "csv"):
        again = await ds.client.get(_url("meaning", fmt=fmt))
        assert again.status_code == 503 and again.headers["retry-after"] == "100"
        assert "could not be loaded" in again.text and "the next try in 100 s" in again.text
    assert len(loads) == 1
    clock[0] += 100  # the next search tries again, and loads the weights now there
    assert (await ds.client.get(_url("meaning"))).status_code == 200
    assert len(loads) == 2
