"""Generated parquet files in the schema of each source profile (profiles.py),
for ``datasette laion sample --profile NAME``.

The columns every source has come from sample.py's generator, as for
LAION-Aesthetics: URLs with the real domain shares and the awkward cases,
captions with Zipf words and names, sizes, scores. Each profile's own
columns get plausible values: MD5, SHA-256 and pHash hex digits, licence URLs
and MIME types (PD12M), img2dataset's download columns and EXIF JSON
(Re-LAION), token and face counts (COYO), face bounding boxes (DataComp).
Columns come in the profile's order with the arrow types it states
(``ARROW_TYPES``). Output is deterministic for a seed, like sample.py's.
"""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import profiles

ARROW_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "list<list<float64>>": pa.list_(pa.list_(pa.float64())),
}

PD12M_LICENSES = [
    ("https://creativecommons.org/publicdomain/zero/1.0/", 0.62),  # CC0
    ("https://creativecommons.org/publicdomain/mark/1.0/", 0.38),  # public domain mark
]
PD12M_SOURCES = ["wikimedia_commons", "flickr_commons", "the_met", "smithsonian", "nasa", "rijksmuseum",
                 "library_of_congress", "europeana"]
MIME_TYPES = [("image/jpeg", 0.82), ("image/png", 0.12), ("image/webp", 0.04), ("image/gif", 0.02)]
DOWNLOAD_ERRORS = ["HTTP Error 404: Not Found", "HTTP Error 403: Forbidden", "<urlopen error timed out>",
                   "image decoding error", "HTTP Error 410: Gone"]
CAMERAS = [("Canon", "Canon EOS 5D Mark III"), ("NIKON CORPORATION", "NIKON D750"), ("SONY", "ILCE-7M3"),
           ("Apple", "iPhone 8"), ("FUJIFILM", "X-T2")]


def schema(profile):
    """The arrow schema of a profile's files."""
    return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in profile.columns if c.name != "__index_level_0__"])


def _hex(rng, n, digits):
    raw = np.frombuffer(rng.bytes(n * digits // 2), dtype=np.uint8).reshape(n, digits // 2)
    return pa.array([bytes(row).hex() for row in raw], pa.string())


def _pick(rng, n, weighted):
    values, weights = zip(*weighted)
    p = np.array(weights) / sum(weights)
    return pa.array(np.array(values)[rng.choice(len(values), size=n, p=p)], pa.string())


def _masked(array, hidden):
    """``array`` with NULL where ``hidden`` (numpy bool) is set."""
    return pc.if_else(pa.array(hidden), pa.nulls(len(array), array.type), array)


def _rounded(values):
    return pc.cast(pc.round(values), pa.int32())


def _words(captions):
    return pc.list_value_length(pc.utf8_split_whitespace(captions))


def columns(profile, common, rng, n):
    """The profile's columns (name -> array) from the ``common`` ones (sample.py's url, text, width,
    height, similarity, punsafe, pwatermark, aesthetic, hash)."""
    c = dict(common)
    int_size = {k: pa.array(c[k].astype(np.int64)) for k in ("width", "height")}
    if profile.name == "laion-aesthetics-v1":
        return {"URL": c["url"], "TEXT": c["text"], "WIDTH": int_size["width"], "HEIGHT": int_size["height"],
                "similarity": pa.array(c["similarity"]), "punsafe": pa.array(c["punsafe"]),
                "pwatermark": pa.array(c["pwatermark"]), "aesthetic": pa.array(c["aesthetic"]), "hash": pa.array(c["hash"])}
    if profile.name == "relaion2b-en-research-safe":
        failed = rng.random(n) < 0.25  # a quarter of LAION's images are gone
        scale = np.minimum(1.0, 512 / np.maximum(c["width"], c["height"]))
        exif = [json.dumps({"Image Make": make, "Image Model": model, "EXIF ExposureTime": "1/250"})
                if r < 0.3 else "{}" for r, (make, model) in zip(rng.random(n), (CAMERAS[i] for i in rng.integers(0, len(CAMERAS), n)))]
        return {
            "url": c["url"], "caption": c["text"], "similarity": pa.array(c["similarity"]), "hash": pa.array(c["hash"]),
            "pwatermark": pa.array(c["pwatermark"]), "punsafe": pa.array(c["punsafe"]),
            "key": pa.array([f"{i:09d}" for i in rng.integers(0, 10**9, n)], pa.string()),
            "status": pa.array(np.where(failed, "failed_to_download", "success"), pa.string()),
            "error_message": _masked(pa.array(np.array(DOWNLOAD_ERRORS)[rng.integers(0, len(DOWNLOAD_ERRORS), n)]), ~failed),
            "width": _masked(pa.array(np.rint(c["width"] * scale).astype(np.int64)), failed),
            "height": _masked(pa.array(np.rint(c["height"] * scale).astype(np.int64)), failed),
            "original_width": _masked(int_size["width"], failed),
            "original_height": _masked(int_size["height"], failed),
            "exif": _masked(pa.array(exif, pa.string()), failed),
            "md5": _masked(_hex(rng, n, 32), failed),
        }
    if profile.name == "pd12m":
        generated = pc.binary_join_element_wise(pa.scalar("The image shows"), c["text"], " ")
        return {
            "id": pa.array(np.cumsum(rng.integers(1, 4, n)) + rng.integers(0, 10**6), pa.int64()),
            "url": c["url"], "caption": pc.if_else(pa.array(rng.random(n) < 0.6), generated, c["text"]),
            "width": int_size["width"], "height": int_size["height"],
            "mime_type": _pick(rng, n, MIME_TYPES), "hash": _hex(rng, n, 32),
            "license": _pick(rng, n, PD12M_LICENSES),
            "source": _pick(rng, n, [(s, 1.0 / (k + 1)) for k, s in enumerate(PD12M_SOURCES)]),
        }
    if profile.name == "coyo-700m":
        words = _words(c["text"])
        tokens = _rounded(pc.multiply(pc.cast(words, pa.float64()), pa.array(rng.uniform(1.1, 1.5, n))))
        return {
            "id": pa.array(rng.choice(10**12, size=n, replace=False), pa.int64()),
            "url": c["url"], "text": c["text"],
            "width": pa.array(c["width"].astype(np.int32)), "height": pa.array(c["height"].astype(np.int32)),
            "image_phash": _hex(rng, n, 16),
            "text_length": pc.cast(pc.utf8_length(c["text"]), pa.int32()),
            "word_count": pc.cast(words, pa.int32()),
            "num_tokens_bert": tokens,
            "num_tokens_gpt": _rounded(pc.multiply(pc.cast(tokens, pa.float64()), 0.92)),
            "num_faces": pa.array(rng.poisson(0.3, n).astype(np.int32)),
            "clip_similarity_vitb32": pa.array(c["similarity"].astype(np.float32)),
            "clip_similarity_vitl14": pa.array((c["similarity"] - rng.normal(0.04, 0.02, n)).astype(np.float32)),
            "nsfw_score_opennsfw2": pa.array(np.minimum(c["punsafe"], 0.4999)),  # COYO dropped rows over 0.5
            "nsfw_score_gantman": pa.array(np.minimum(c["punsafe"] * rng.uniform(0.5, 1.5, n), 0.4999).astype(np.float32)),
            "watermark_score": pa.array(c["pwatermark"]),
            # COYO's scores spread below LAION-Aesthetics' 6+ (mean about 4.9)
            "aesthetic_score_laion_v2": pa.array(np.clip(rng.normal(4.9, 0.65, n), 1.5, 8.5).astype(np.float32)),
        }
    if profile.name == "datacomp-1b":
        faces = rng.poisson(0.25, n)
        boxes = []
        for count in faces:
            found = []
            for _ in range(count):
                x, y = rng.uniform(0, 0.8, 2)
                size = rng.uniform(0.05, 0.2)
                found.append([round(x, 4), round(y, 4), round(min(1, x + size), 4), round(min(1, y + size * 1.2), 4)])
            boxes.append(found)
        return {
            "uid": _hex(rng, n, 32), "url": c["url"], "text": c["text"],
            "original_width": int_size["width"], "original_height": int_size["height"],
            "clip_b32_similarity_score": pa.array(c["similarity"].astype(np.float32)),
            "clip_l14_similarity_score": pa.array((c["similarity"] - rng.normal(0.03, 0.02, n)).astype(np.float32)),
            "face_bboxes": pa.array(boxes, ARROW_TYPES["list<list<float64>>"]),
            "sha256": _hex(rng, n, 64),
        }
    if profile.name == "cc12m":
        return {"image_url": c["url"], "caption": c["text"]}
    raise ValueError(f"no sample generator for profile {profile.name!r}")


def table(profile, common, rng, n):
    """A chunk of ``n`` rows in the profile's schema."""
    arrays = columns(profile, common, rng, n)
    target = schema(profile)
    return pa.Table.from_arrays([pc.cast(arrays[f.name], f.type) for f in target], schema=target)


def names():
    """The profiles with a generator: all of them."""
    return list(profiles.PROFILES)
