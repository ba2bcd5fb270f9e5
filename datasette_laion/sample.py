"""Generate parquet files with the exact LAION-Aesthetics v2 schema.

The real files were withdrawn by LAION, so everything here runs on data made
by this generator. It aims to look like the real thing where it matters to the
site and the build:

* domains: the real top domains at their real shares (i.pinimg.com ~8.6%),
  then a Zipf-like tail, the top 100 holding ~47% of the rows;
* captions: ~67 characters on average, words with Zipf-like frequencies
  (a very common word in ~70% of captions, "dog" in ~12%, a long tail of
  rare words), names from the curated lists at realistic rates (Thomas
  Kinkade ~0.077% of rows);
* scores: aesthetic >= 6 decaying towards 8.5; punsafe > 0.5 for ~2.9% and
  exactly 1.0 for ~0.002%; pwatermark > 0.8 for ~6%;
* the awkward rows real data has (``AWKWARD_URLS``, ``AWKWARD_CAPTIONS``):
  every one of them lands in every file with enough rows, and more at random.

Output is deterministic for a given seed (and pyarrow version).
"""
import hashlib
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import profiles
from .names import load_names

# The exact schema of the LAION-Aesthetics v2 parquet files.
SCHEMA = pa.schema(
    [
        ("URL", pa.string()),
        ("TEXT", pa.string()),
        ("WIDTH", pa.float64()),
        ("HEIGHT", pa.float64()),
        ("similarity", pa.float64()),
        ("punsafe", pa.float32()),
        ("pwatermark", pa.float32()),
        ("AESTHETIC_SCORE", pa.float32()),
        ("hash", pa.int64()),
        ("__index_level_0__", pa.int64()),
    ]
)

REAL_ROWS = 12_096_835

# Real top domains with their real image counts in the 6+ set, then more real
# hosts of the big image sites (shares below spread the rest of the top 100).
TOP_DOMAINS = [
    ("i.pinimg.com", 1_043_949),
    ("render.fineartamerica.com", 601_106),
    ("us.123rf.com", 497_244),
    ("cdn.shopify.com", 241_632),
    ("photos.smugmug.com", 225_582),
]
MORE_DOMAINS = """
i.etsystatic.com images.fineartamerica.com i.ebayimg.com ae01.alicdn.com
static.wixstatic.com images-na.ssl-images-amazon.com m.media-amazon.com
ih1.redbubble.net images.squarespace-cdn.com live.staticflickr.com
farm1.staticflickr.com farm4.staticflickr.com farm8.staticflickr.com
i.redd.it upload.wikimedia.org media.gettyimages.com image.shutterstock.com
thumbs.dreamstime.com www.dhresource.com cdn.pixabay.com images.unsplash.com
c8.alamy.com us.fotolia.com i.ytimg.com cdn.vox-cdn.com
s-media-cache-ak0.pinimg.com media.istockphoto.com www.artranked.com
cdn11.bigcommerce.com i0.wp.com i1.wp.com i2.wp.com ak1.ostkcdn.com
images.saatchiart.com imgc.artprintimages.com cdn.kinja-img.com
artfiles.alphacoders.com images.pexels.com images.metmuseum.org
mir-s3-cdn-cf.behance.net cdna.artstation.com cdnb.artstation.com
img.freepik.com img.artpal.com i.imgur.com pbs.twimg.com www.wallpaperflare.com
cdn.mos.cms.futurecdn.net i.pinimg.co.uk static.zara.net cdn.webshopapp.com
lh3.googleusercontent.com d2v9y0dukr6mq2.cloudfront.net www.worldatlas.com
images.craigslist.org photos.zillowstatic.com ssl.cdn-redfin.com
cdn.decoist.com st.hzcdn.com images.bonanzastatic.com img.zcdn.com.au
""".split()

# Words in caption order of frequency. The head is what real alt text is
# made of; "dog" is deliberately near the top (~12% of captions) and "lemur"
# is kept rare: both appear in public links to the original site.
COMMON_WORDS = """
the of and a in with for dog on art print by painting wall poster canvas
to black white from photo home design modern vintage is old your new beautiful
at woman man cat girl house love blue red landscape room flower garden dress
wedding illustration portrait green summer water christmas tree sunset style
light beach day stock vector image background this living city night one
floral mountain sea nature pink my wood set table bedroom kitchen are decor
gold watercolor abstract card baby christmas be framed decoration ideas bird
how fine photography winter dark sky family pattern window small colorful
horse life little paper lake spring color photograph world best an as that
street interior fashion cute funny autumn outdoor luxury wallpaper kids
lion flowers cake party shirt rose tattoo car boat rustic acrylic
""".split()
COMMON_WORDS = list(dict.fromkeys(COMMON_WORDS))
PLANTED_WORDS = {
    # word: share of captions that contain it, whatever the vocabulary says
    "lemur": 3e-5,
    "axolotl": 5e-7,
}
SYLLABLES = (
    "ka lo mi ra ne su ti vo ba de fi gu ha je ko lu ma no pe ri sa te ul va "
    "wo xe yi zo an el in or ur ast ent ill ond rum sel tor vin"
).split()
TLDS = ["com"] * 10 + ["net", "org", "co.uk", "de", "fr", "jp", "com.au", "ru", "it", "nl", "ca", "io"]
SUBDOMAINS = ["www", "images", "cdn", "img", "static", "media", "i", "photos", "assets", "s3"]
EXTENSIONS = [".jpg"] * 70 + [".jpeg"] * 6 + [".png"] * 12 + [".webp"] * 4 + [".gif"] + [""] * 7

# Known name rates (rows mentioning the name / all rows) from the original site.
KNOWN_NAME_ROWS = {
    "Thomas Kinkade": 9_268,
    "Vincent van Gogh": 8_378,
    "Captain Marvel": 4_993,
    "Black Panther": 4_395,
    "Mickey Mouse": 520,
}

# The awkward rows real data has, planted in every file (see module docstring).
# Each URL case: (url, what it exercises).
AWKWARD_URLS = [
    ("https://cdn.shopify.com/s/files/1/0228/7135/products/poster.jpg?v=1571438557&width=1000", "query string"),
    ("https://images.example-photos.com/photo/12345", "no extension"),
    ("https://cdn.webp-site.net/img/landscape-at-dawn.webp", ".webp"),
    ("http://user:password@private.example.org:8080/images/a.jpg", "user:password@host:port"),
    ("https://xn--bcher-kva.example/images/b%C3%BCcher.jpg", "punycode host"),
    ("https://bücher.example/bilder/titel.jpg", "IDN host"),
    ("http://[2001:db8::1]/photo.jpg", "IPv6 literal"),
    ("http://[2001:DB8::2]:8080/p.png", "IPv6 literal with port"),
    ("//cdn.protocol-relative.com/pic.png", "protocol-relative"),
    ("http://[::1/broken.jpg", "unparseable: unbalanced bracket"),
    ("not a url at all", "no host"),
    ("", "empty"),
    ("HTTPS://WWW.UPPER-CASE.COM/IMG.JPG", "upper case host"),
    ("https://example.com:notaport/x.jpg", "bad port"),
    ("https://trailing-dot.example.com./x.jpg", "trailing dot"),
    ("http://192.168.1.20/cam/snapshot.jpg", "IPv4 literal"),
    ("https://example.com/path with spaces/img.jpg", "spaces in path"),
    ("ftp://files.example.net/pub/image.gif", "ftp scheme"),
    ("  https://leading-space.example.com/x.jpg", "leading spaces"),
    ("https://split\n.example.com/newline.jpg", "newline in host"),
    ("https://example.com/" + "very-long-path/" * 100 + "img.jpg", "very long URL"),
    ("javascript:alert(document.domain)//.jpg", "javascript: URL"),
    ("data:image/svg+xml,<svg onload=alert(1)>", "data: URL"),
    ('https://evil.example.com/x.jpg"><script>alert("url")</script>', "markup in URL"),
    ("https://evil.example.com/x.jpg' onerror='alert(2)", "attribute injection in URL"),
]
AWKWARD_CAPTIONS = [
    (None, "null caption"),
    ("", "empty caption"),
    ("   ", "blank caption"),
    ('<script>alert("caption")</script> cute cat', "script tag"),
    ('"><img src=x onerror=alert(3)> landscape painting', "attribute injection"),
    ('<a href="javascript:alert(4)">click me</a> poster', "javascript: link"),
    ("javascript:alert(5)", "javascript: text"),
    ("He said \"hello\" and 'goodbye' to the dog", "quotes"),
    ("Emoji 🐶🎨✨ dog art 👩‍🎨 print", "emoji"),
    ('NEAR(dog cat) AND OR NOT * ^ : "unbalanced', "FTS syntax"),
    ("Ünïcödé café naïve résumé by Salvador Dali", "diacritics"),
    ("日本の風景 桜 富士山 landscape", "CJK"),
    ("مرحبا بالعالم right-to-left text", "right-to-left"),
    ("tab\there\nnew line\r\nand\x00nul", "control characters"),
    ('Dwayne "The Rock" Johnson at the premiere', "name with double quotes"),
    ("Georgia O'Keeffe red canna flower print", "name with apostrophe"),
    ("a very long caption " + "with many words describing the image " * 60, "very long caption"),
]

NULL_CAPTION_RATE = 0.002
AWKWARD_RATE = 0.0005  # extra random awkward rows beyond one of each per file
CHUNK_ROWS = 100_000
# Hosts beyond the named ones: their Zipf tail puts ~47% of rows in the top 100.
TAIL_DOMAINS = 400_000


def _pseudo_words(rng, count):
    """Distinct made-up words for the vocabulary's long tail."""
    words, seen = [], set(COMMON_WORDS) | set(PLANTED_WORDS)
    syllables = np.array(SYLLABLES)
    while len(words) < count:
        lengths = rng.integers(2, 5, size=count)
        picks = rng.integers(0, len(syllables), size=(count, 4))
        for length, row in zip(lengths, picks):
            word = "".join(syllables[row[:length]])
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == count:
                    break
    return words


class _World:
    """Everything shared by all files of one sample: vocabulary, domains, names."""

    def __init__(self, seed, total_rows):
        rng = np.random.default_rng([seed, 0])
        # Vocabulary with Zipf-like weights.
        tail = _pseudo_words(rng, max(2_000, min(60_000, total_rows // 20)))
        self.vocab = pa.array(COMMON_WORDS + tail)
        ranks = np.arange(1, len(self.vocab) + 1, dtype=np.float64)
        weights = 1.0 / ranks ** 1.02
        self.word_p = weights / weights.sum()
        # Domains: real top domains at real shares, then a Zipf tail.
        top_share = [count / REAL_ROWS for _, count in TOP_DOMAINS]
        rest_top = np.array([1.0 / (r + 6) for r in range(len(MORE_DOMAINS))])
        rest_top = rest_top / rest_top.sum() * 0.18
        n_tail = TAIL_DOMAINS
        tail_names = self._tail_domains(rng, n_tail)
        tail_w = 1.0 / np.arange(1, len(tail_names) + 1, dtype=np.float64) ** 0.9
        tail_w = tail_w / tail_w.sum() * (1.0 - sum(top_share) - rest_top.sum())
        self.domains = pa.concat_arrays([pa.array([d for d, _ in TOP_DOMAINS] + MORE_DOMAINS), tail_names])
        self.domain_p = np.concatenate([top_share, rest_top, tail_w])
        self.domain_p /= self.domain_p.sum()
        # Names at realistic rates: known ones as measured, others Zipf-like.
        names, rates = [], []
        name_tables, _ = load_names()
        for table, (_, rows) in name_tables.items():
            order = np.random.default_rng([seed, 1, len(table)]).permutation(len(rows))
            top = 8_000 / REAL_ROWS if table == "artists" else 4_000 / REAL_ROWS
            for rank, index in enumerate(order, start=1):
                name = rows[index]["name"]
                known = KNOWN_NAME_ROWS.get(name)
                names.append(name)
                rates.append(known / REAL_ROWS if known else top / (rank + 1))
        self.names = pa.array(names)
        self.name_rates = np.array(rates)

    @staticmethod
    def _tail_domains(rng, count):
        """``count`` made-up hosts (syllables, sometimes a subdomain, varied TLDs)."""
        k = np.arange(count, dtype=np.int64) + rng.integers(0, 39**3)
        syllables = pa.array(SYLLABLES)
        lengths = 2 + k % 3
        parts = []
        for j in range(4):
            digit = (k // len(SYLLABLES) ** j) % len(SYLLABLES)
            parts.append(pc.if_else(pa.array(lengths > j), syllables.take(pa.array(digit)), pa.nulls(count, pa.string())))
        base = pc.binary_join_element_wise(*parts, "", null_handling="skip")
        sub_index = (k * 7) % (len(SUBDOMAINS) + 4)
        subs = pa.array([SUBDOMAINS[i] + "." if i < len(SUBDOMAINS) else "" for i in range(len(SUBDOMAINS) + 4)])
        tlds = pa.array(["." + t for t in TLDS])
        hosts = pc.binary_join_element_wise(
            subs.take(pa.array(sub_index)), base, tlds.take(pa.array((k * 13) % len(TLDS))), ""
        )
        return pc.unique(hosts)  # in order of first appearance


def _captions(world, rng, n):
    """Zipf-like word captions, ~67 characters on average, some with names."""
    lengths = np.clip(np.rint(rng.lognormal(mean=2.3, sigma=0.45, size=n)), 1, 48).astype(np.int64)
    width = int(lengths.max()) if n else 0
    idx = rng.choice(len(world.vocab), size=(n, width), p=world.word_p)
    columns = []
    for j in range(width):
        words = world.vocab.take(pa.array(idx[:, j]))
        columns.append(pc.if_else(pa.array(lengths > j), words, pa.nulls(n, pa.string())))
    captions = pc.binary_join_element_wise(*columns, " ", null_handling="skip")
    # Capitalise a share of captions, as much alt text is.
    capital = pa.array(rng.random(n) < 0.45)
    captions = pc.if_else(capital, pc.utf8_capitalize(captions), captions)
    # Planted rare words.
    for word, rate in PLANTED_WORDS.items():
        hit = rng.random(n) < rate
        if hit.any():
            captions = pc.if_else(
                pa.array(hit), pc.binary_join_element_wise(captions, pa.scalar(word), " "), captions
            )
    # Names: "<caption> by <name>" or "<name> <caption>".
    mention = rng.random(n) < world.name_rates.sum()
    if mention.any():
        which = rng.choice(len(world.names), size=n, p=world.name_rates / world.name_rates.sum())
        names = world.names.take(pa.array(which))
        before = pc.binary_join_element_wise(names, captions, " ")
        after = pc.binary_join_element_wise(captions, pa.scalar("by"), names, " ")
        placed = pc.if_else(pa.array(rng.random(n) < 0.5), before, after)
        captions = pc.if_else(pa.array(mention), placed, captions)
    return captions


def _urls(world, rng, n):
    domain_idx = rng.choice(len(world.domains), size=n, p=world.domain_p)
    hosts = world.domains.take(pa.array(domain_idx))
    scheme = pa.array(np.where(rng.random(n) < 0.85, "https://", "http://"))
    words = world.vocab.take(pa.array(rng.integers(0, min(len(world.vocab), 5_000), size=n)))
    words2 = world.vocab.take(pa.array(rng.integers(0, min(len(world.vocab), 5_000), size=n)))
    year = pc.cast(pa.array(rng.integers(2008, 2023, size=n)), pa.string())
    ident = pc.cast(pa.array(rng.integers(10_000, 10**12, size=n)), pa.string())
    ext = pa.array(np.array(EXTENSIONS)[rng.integers(0, len(EXTENSIONS), size=n)])
    path = pc.binary_join_element_wise(
        pa.scalar("/wp-content/uploads/"), year, pa.scalar("/"), words, pa.scalar("-"), words2,
        pa.scalar("-"), ident, ext, "",
    )
    query = pc.if_else(
        pa.array(rng.random(n) < 0.05),
        pc.binary_join_element_wise(pa.scalar("?v="), ident, ""),
        pa.scalar(""),
    )
    return pc.binary_join_element_wise(scheme, hosts, path, query, "")


def _scores(rng, n, aesthetic_from=6.0):
    if aesthetic_from == 6.0:  # the 6+ set
        aesthetic = (6.0 + np.minimum(rng.gamma(1.1, 0.32, size=n), 2.6)).astype(np.float32)
    else:  # a larger set (4.5+, 4.75+, 5+): a tenth of the rows at 6 or more
        scale = (6.0 - aesthetic_from) / math.log(10) if aesthetic_from < 6 else 0.32
        aesthetic = (aesthetic_from + np.minimum(rng.exponential(scale, size=n), 8.6 - aesthetic_from)).astype(np.float32)
    punsafe = rng.beta(0.6, 25, size=n)
    nsfw = rng.random(n) < 0.031
    punsafe[nsfw] = rng.beta(6, 1.5, size=int(nsfw.sum()))
    punsafe[rng.random(n) < 0.00002] = 1.0
    pwatermark = rng.beta(1.5, 8, size=n)
    marked = rng.random(n) < 0.073
    pwatermark[marked] = rng.beta(8, 1, size=int(marked.sum()))
    similarity = np.clip(rng.normal(0.32, 0.045, size=n), 0.2, 0.55)
    common = np.array([512, 600, 640, 736, 800, 1000, 1024, 1200, 1280, 1500, 1600, 1920, 2048, 3000])
    width = np.where(
        rng.random(n) < 0.6, common[rng.integers(0, len(common), size=n)], rng.integers(256, 4000, size=n)
    ).astype(np.float64)
    aspect = np.array([1.0, 4 / 3, 3 / 4, 16 / 9, 2 / 3, 3 / 2, 1.25])[rng.integers(0, 7, size=n)]
    height = np.maximum(np.rint(width / aspect), 64).astype(np.float64)
    return aesthetic, punsafe.astype(np.float32), pwatermark.astype(np.float32), similarity, width, height


def _plant_awkward(rng, urls, captions, n, first_chunk):
    """Replace some rows with the awkward cases: all of them at the start of
    each file (when it is long enough), and a few more at random."""
    url_cases = [u for u, _ in AWKWARD_URLS]
    caption_cases = [c for c, _ in AWKWARD_CAPTIONS]
    url_pos = {}
    caption_pos = {}
    if first_chunk and n >= len(url_cases) + len(caption_cases):
        # Spread them out so that they are not all in the first page.
        spots = rng.choice(n, size=len(url_cases) + len(caption_cases), replace=False)
        for i, case in enumerate(url_cases):
            url_pos[int(spots[i])] = case
        for i, case in enumerate(caption_cases):
            caption_pos[int(spots[len(url_cases) + i])] = case
    for position in np.nonzero(rng.random(n) < AWKWARD_RATE)[0]:
        url_pos.setdefault(int(position), url_cases[rng.integers(0, len(url_cases))])
    for position in np.nonzero(rng.random(n) < AWKWARD_RATE)[0]:
        caption_pos.setdefault(int(position), caption_cases[rng.integers(0, len(caption_cases))])
    for position in np.nonzero(rng.random(n) < NULL_CAPTION_RATE)[0]:
        caption_pos.setdefault(int(position), None)

    def replace(array, positions):
        if not positions:
            return array
        mask = np.zeros(n, dtype=bool)
        mask[list(positions)] = True
        values = [positions[p] for p in sorted(positions)]
        return pc.replace_with_mask(array, pa.array(mask), pa.array(values, pa.string()))

    return replace(urls, url_pos), replace(captions, caption_pos)


def _common(world, rng, n, first_chunk, aesthetic_from=6.0):
    """The columns every source has, by their images names."""
    captions = _captions(world, rng, n)
    urls = _urls(world, rng, n)
    urls, captions = _plant_awkward(rng, urls, captions, n, first_chunk)
    aesthetic, punsafe, pwatermark, similarity, width, height = _scores(rng, n, aesthetic_from)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64, endpoint=True)
    return {"url": urls, "text": captions, "width": width, "height": height, "similarity": similarity,
            "punsafe": punsafe, "pwatermark": pwatermark, "aesthetic": aesthetic, "hash": hashes}


def _chunk(world, rng, n, first_chunk, index_start, aesthetic_from=6.0):
    c = _common(world, rng, n, first_chunk, aesthetic_from)
    urls, captions, width, height = c["url"], c["text"], c["width"], c["height"]
    similarity, punsafe, pwatermark, aesthetic, hashes = (
        c["similarity"], c["punsafe"], c["pwatermark"], c["aesthetic"], c["hash"])
    index = index_start + np.cumsum(rng.integers(1, 40, size=n))
    return pa.Table.from_arrays(
        [
            urls, captions, pa.array(width), pa.array(height), pa.array(similarity),
            pa.array(punsafe), pa.array(pwatermark), pa.array(aesthetic),
            pa.array(hashes), pa.array(index, pa.int64()),
        ],
        schema=SCHEMA,
    )


def file_names(files, seed):
    """Names in the pattern of the real files: train-0000N-of-0000K-<hash>.parquet."""
    names = []
    for i in range(files):
        digest = hashlib.sha256(f"{seed}:{i}:{files}".encode()).hexdigest()[:16]
        names.append(f"train-{i:05d}-of-{files:05d}-{digest}.parquet")
    return names


def generate(outdir, rows=50_000, files=1, seed=0, progress=None, profile=None, aesthetic_from=6.0):
    """Write ``rows`` rows over ``files`` parquet files into ``outdir``; return
    their paths. ``progress(n)`` is called after each chunk of n rows.
    ``profile``: the name of a source profile whose schema to write
    (sample_profiles.py; default: LAION-Aesthetics v2, the exact schema).
    ``aesthetic_from``: the lowest aesthetic score (6: the 6+ set; lower, as
    the 4.5+ to 5+ sets: a tenth of the rows score 6 or more)."""
    if rows < 0 or files < 1:
        raise ValueError("rows must be >= 0 and files >= 1")
    if profile is not None and profile != profiles.DEFAULT:
        return _generate_profile(outdir, rows, files, seed, progress, profiles.get(profile), aesthetic_from)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    world = _World(seed, rows)
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    paths = []
    index_start = 0
    for i, (name, count) in enumerate(zip(file_names(files, seed), per_file)):
        path = outdir / name
        partial = path.with_name(path.name + ".partial")
        with pq.ParquetWriter(partial, SCHEMA, compression="snappy") as writer:
            for c in range(max(1, math.ceil(count / CHUNK_ROWS))):
                n = min(CHUNK_ROWS, count - c * CHUNK_ROWS)
                rng = np.random.default_rng([seed, 2, i, c])
                table = _chunk(world, rng, n, c == 0, index_start, aesthetic_from)
                if n:
                    index_start = int(table.column("__index_level_0__")[-1].as_py())
                writer.write_table(table)
                if progress:
                    progress(n)
        partial.replace(path)
        paths.append(path)
    return paths


def _generate_profile(outdir, rows, files, seed, progress, profile, aesthetic_from):
    """generate() in the schema of another source profile."""
    from . import sample_profiles

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    world = _World(seed, rows)
    schema = sample_profiles.schema(profile)
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    paths = []
    for i, (name, count) in enumerate(zip(file_names(files, seed), per_file)):
        path = outdir / name
        partial = path.with_name(path.name + ".partial")
        with pq.ParquetWriter(partial, schema, compression="snappy") as writer:
            for c in range(max(1, math.ceil(count / CHUNK_ROWS))):
                n = min(CHUNK_ROWS, count - c * CHUNK_ROWS)
                rng = np.random.default_rng([seed, 2, i, c])
                common = _common(world, rng, n, c == 0, aesthetic_from)
                writer.write_table(sample_profiles.table(profile, common, rng, n))
                if progress:
                    progress(n)
        partial.replace(path)
        paths.append(path)
    return paths
