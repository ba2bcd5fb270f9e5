"""Source profiles: how each image-text dataset's parquet columns become the
site's ``images`` columns. Declarative, one entry per source; adding a source
means adding a ``Profile`` to ``PROFILES``, not editing the build.

The site's own columns (``SITE_COLUMNS``) are those of LAION-Aesthetics, in
this order: ``url, text, width, height, similarity, punsafe, pwatermark,
aesthetic, hash, __index_level_0__``. A profile maps the source columns that
mean the same thing onto them; every other source column is kept as an extra
column of ``images`` under its lower-cased name, after ``domain_id`` and
``url_hash``.

A site column the source does not have is a NULL column, not left out of the
table: the site's pages, search and canned queries name these columns today,
and would fail without them. Which ones the source really has is in the
database: ``build_info`` key ``site_columns`` (a JSON list), with
``source_columns`` (JSON: site column -> the source's column), so that the site
can later show only the columns it has.

``hash`` holds the source's own row key, as text: the column named ``hash``
when the source has one (LAION's 64-bit hash; PD12M's MD5 of the image), else
its id column (COYO ``id``, DataComp ``uid``); CC12M has none.

Each ``Column`` gives the arrow type the source publishes (from its dataset
card or loading code; ``assumed=True`` where no card states it); the build
accepts any type of the same kind (strings: large or dictionary-encoded too;
numbers: any integer or floating-point type), as ``source.open_source``
checks. Nothing here imports Arrow: the CLI lists profiles without it.
"""
from dataclasses import dataclass

# The site's columns in table order, each with the kind of source column it
# accepts (source.KIND_DESCRIPTIONS).
SITE_COLUMNS = {
    "url": "string",
    "text": "string",
    "width": "number",
    "height": "number",
    "similarity": "number",
    "punsafe": "number",
    "pwatermark": "number",
    "aesthetic": "number",
    "hash": "id",
    "__index_level_0__": "integer",
}


@dataclass(frozen=True)
class Column:
    name: str  # in the source (matched ignoring case)
    type: str  # the arrow type the source publishes: string, int32, int64, float32, float64, list<list<float64>>
    site: str = None  # the site column it fills; None: kept as an extra column
    optional: bool = False  # not in every copy of the source: NULL (or no extra column) when absent
    assumed: bool = False  # type not stated by the source's card: our best reading


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    description: str
    source: str  # where it is published (Hugging Face dataset id)
    source_url: str
    licence: str
    licence_url: str
    rows: int  # approximate
    columns: tuple  # Column, in the source's own order
    best_first: str = None  # the site column rows are stored by, highest first; None: source order
    shown: tuple = ()  # extra columns worth showing on an image's page
    also: tuple = ()  # other datasets with the same schema
    notes: str = ""  # assumptions, where the published description left a choice
    # Where the files are in the Hugging Face dataset ``source`` (scripts/fetch-data.sh): globs on
    # their paths in the repo, "*" matching "/" too. hf_files: the metadata parquet files;
    # hf_embeddings: the source's own embedding files, if it publishes them beside the metadata.
    hf_files: str = "*.parquet"
    hf_embeddings: str = None

    @property
    def mapped(self):
        """site column -> Column, in site column order."""
        by_site = {c.site: c for c in self.columns if c.site}
        return {site: by_site[site] for site in SITE_COLUMNS if site in by_site}

    @property
    def required(self):
        return [c for c in self.columns if not c.optional]

    @property
    def extras(self):
        return [c for c in self.columns if not c.site]

    @property
    def order(self):
        """build_info ``order``: how rowids run (the site knows "aesthetic desc")."""
        return f"{self.best_first} desc" if self.best_first else "source order"


def _laion(aesthetic, width_type, index):
    return (
        Column("URL", "string", "url"),
        Column("TEXT", "string", "text"),
        Column("WIDTH", width_type, "width"),
        Column("HEIGHT", width_type, "height"),
        Column("similarity", "float64", "similarity"),
        Column("punsafe", "float32", "punsafe"),
        Column("pwatermark", "float32", "pwatermark"),
        Column(aesthetic, "float32", "aesthetic"),
        Column("hash", "int64", "hash"),
    ) + ((Column("__index_level_0__", "int64", "__index_level_0__", optional=True),) if index else ())


LAION_LICENCE = ("CC-BY 4.0 (LAION metadata)", "https://creativecommons.org/licenses/by/4.0/")

PROFILES = {
    p.name: p
    for p in [
        Profile(
            name="laion-aesthetics-v2",
            title="LAION-Aesthetics v2",
            description="LAION-2B-en images that the LAION aesthetic predictor v2 scores at or above a threshold; "
            "6+ (improved_aesthetics_6plus, 12,096,835 rows) is what Stable Diffusion was trained on",
            source="laion/aesthetics_v2_4.75",
            source_url="https://laion.ai/blog/laion-aesthetics/",
            licence=LAION_LICENCE[0],
            licence_url=LAION_LICENCE[1],
            rows=12_096_835,
            columns=_laion("AESTHETIC_SCORE", "float64", index=True),
            best_first="aesthetic",
            also=("laion/aesthetics_v2_4.5", "laion/aesthetics_v2_5.0", "improved_aesthetics_6plus"),
            notes="rows: the 6+ set; 4.75+ and 4.5+ are about 100 times as many. __index_level_0__ (a pandas "
            "index) is not in every copy",
        ),
        Profile(
            name="laion-aesthetics-v1",
            title="LAION-Aesthetics v1",
            description="LAION-2B-en with the first aesthetic predictor's score (column aesthetic), sizes as int32",
            source="laion/laion2B-en-aesthetic",
            source_url="https://laion.ai/blog/laion-aesthetics/",
            licence=LAION_LICENCE[0],
            licence_url=LAION_LICENCE[1],
            rows=52_000_000,
            columns=_laion("aesthetic", "int32", index=True),
            best_first="aesthetic",
            notes="rows: approximate, from LAION's announcement",
        ),
        Profile(
            name="relaion2b-en-research-safe",
            title="Re-LAION-2B-en research-safe",
            description="LAION-2B-en as re-released in 2024 with links to known illegal content removed "
            "(gated: accept the conditions on Hugging Face); no aesthetic score",
            source="laion/relaion2B-en-research-safe",
            source_url="https://laion.ai/blog/relaion-5b/",
            licence="CC-BY 4.0 (assumed: the dataset card states none; Re-LAION-2B-en research is CC-BY 4.0)",
            licence_url="https://creativecommons.org/licenses/by/4.0/",
            rows=2_100_000_000,
            columns=(
                Column("url", "string", "url"),
                Column("caption", "string", "text"),
                Column("similarity", "float64", "similarity"),
                Column("hash", "int64", "hash"),
                Column("pwatermark", "float32", "pwatermark"),
                Column("punsafe", "float32", "punsafe"),
                Column("key", "string", assumed=True),
                Column("status", "string", assumed=True),
                Column("error_message", "string", assumed=True),
                Column("width", "int64", "width", assumed=True),
                Column("height", "int64", "height", assumed=True),
                Column("original_width", "int64", assumed=True),
                Column("original_height", "int64", assumed=True),
                Column("exif", "string", assumed=True),
                Column("md5", "string", assumed=True),
            ),
            best_first="similarity",
            shown=("original_width", "original_height", "status", "md5"),
            notes="key, status, error_message, exif, md5 and the sizes are img2dataset's columns (types as "
            "img2dataset writes them); width/height are mapped as the site's sizes, original_width/height kept",
        ),
        Profile(
            name="pd12m",
            title="PD12M",
            description="12.4 million public-domain and CC0 images with generated captions, hosted by Spawning",
            source="Spawning/PD12M",
            source_url="https://huggingface.co/datasets/Spawning/PD12M",
            licence="CDLA-Permissive-2.0 (the dataset); each image's own licence is in its license column",
            licence_url="https://cdla.dev/permissive-2-0/",
            rows=12_400_000,
            columns=(
                Column("id", "int64", assumed=True),
                Column("url", "string", "url"),
                Column("caption", "string", "text"),
                Column("width", "int64", "width", assumed=True),
                Column("height", "int64", "height", assumed=True),
                Column("mime_type", "string"),
                Column("hash", "string", "hash"),  # MD5 of the image file
                Column("license", "string"),  # a licence URL
                Column("source", "string", optional=True),  # added in a later release
            ),
            shown=("license", "source", "mime_type"),
            notes="shards of 100,000 rows; id's type is not on the card (int64 assumed; a string is accepted too); "
            "no scores: stored in source order",
            hf_files="metadata/*.parquet",
            hf_embeddings="embeddings/*",
        ),
        Profile(
            name="coyo-700m",
            title="COYO-700M",
            description="747 million alt-text/image pairs from Common Crawl (Kakao Brain), with CLIP similarities, "
            "NSFW, watermark and LAION aesthetic scores",
            source="kakaobrain/coyo-700m",
            source_url="https://huggingface.co/datasets/kakaobrain/coyo-700m",
            licence="CC-BY 4.0",
            licence_url="https://creativecommons.org/licenses/by/4.0/",
            rows=747_000_000,
            columns=(
                Column("id", "int64", "hash"),
                Column("url", "string", "url"),
                Column("text", "string", "text"),
                Column("width", "int32", "width"),
                Column("height", "int32", "height"),
                Column("image_phash", "string"),
                Column("text_length", "int32"),
                Column("word_count", "int32"),
                Column("num_tokens_bert", "int32"),
                Column("num_tokens_gpt", "int32"),
                Column("num_faces", "int32"),
                Column("clip_similarity_vitb32", "float32", "similarity"),
                Column("clip_similarity_vitl14", "float32"),
                Column("nsfw_score_opennsfw2", "float32", "punsafe"),
                Column("nsfw_score_gantman", "float32"),
                Column("watermark_score", "float32", "pwatermark"),
                Column("aesthetic_score_laion_v2", "float32", "aesthetic"),
            ),
            best_first="aesthetic",
            shown=("image_phash", "num_faces", "clip_similarity_vitl14", "nsfw_score_gantman"),
            notes="similarity: CLIP ViT-B/32, as LAION's; punsafe: OpenNSFW2's score (rows over 0.5 were removed "
            "by COYO); image_phash: 16 hex digits, as text (the card's type: string)",
            hf_files="data/*.parquet",
        ),
        Profile(
            name="datacomp-1b",
            title="DataComp-1B",
            description="1.4 billion image-text pairs from Common Crawl, the best filtered subset of DataComp's "
            "CommonPool; no safety or aesthetic scores",
            source="mlfoundations/datacomp_1b",
            source_url="https://www.datacomp.ai/",
            licence="CC-BY 4.0",
            licence_url="https://creativecommons.org/licenses/by/4.0/",
            rows=1_400_000_000,
            columns=(
                Column("uid", "string", "hash"),
                Column("url", "string", "url"),
                Column("text", "string", "text"),
                Column("original_width", "int64", "width"),
                Column("original_height", "int64", "height"),
                Column("clip_b32_similarity_score", "float32", "similarity", assumed=True),
                Column("clip_l14_similarity_score", "float32", assumed=True),
                Column("face_bboxes", "list<list<float64>>"),
                Column("sha256", "string"),
            ),
            best_first="similarity",
            shown=("clip_l14_similarity_score", "face_bboxes", "sha256"),
            notes="similarity: CLIP ViT-B/32 (float32 assumed); face_bboxes (one [x1, y1, x2, y2] per face, "
            "relative) stored as JSON text",
            hf_embeddings="*.npz",  # the CLIP embeddings of each row's image and text, one .npz per parquet file
        ),
        Profile(
            name="cc12m",
            title="Conceptual 12M",
            description="12.4 million image URLs with their alt text (Google Research), for vision-and-language "
            "pre-training; URLs and captions only",
            source="google-research-datasets/conceptual_12m",
            source_url="https://github.com/google-research-datasets/conceptual-12m",
            licence="Free for any purpose; acknowledgement of Google LLC as the source appreciated",
            licence_url="https://github.com/google-research-datasets/conceptual-12m/blob/main/LICENSE",
            rows=12_423_374,
            columns=(
                Column("image_url", "string", "url"),
                Column("caption", "string", "text"),
            ),
            notes="no sizes, scores or key: stored in source order",
        ),
    ]
}
DEFAULT = "laion-aesthetics-v2"  # errors about it read as they always have


def get(name):
    """The profile called ``name``; KeyError names the ones there are."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"no profile {name!r}; profiles: {', '.join(PROFILES)}") from None


def describe(profile):
    """Lines for `datasette laion profiles`."""
    mapped = ", ".join(
        (f"{site} <- {column.name}" if site != column.name else site) + (" (optional)" if column.optional else "")
        for site, column in profile.mapped.items()
    )
    missing = [site for site in SITE_COLUMNS if site not in profile.mapped]
    extras = ", ".join(c.name.lower() + (" (optional)" if c.optional else "") for c in profile.extras)
    lines = [
        f"{profile.name}: {profile.title}",
        f"  source:     {profile.source} ({profile.source_url})" + (f"; also {', '.join(profile.also)}" if profile.also else ""),
        f"  rows:       ~{profile.rows:,}",
        f"  licence:    {profile.licence}",
        f"  maps:       {mapped}",
        f"  NULL:       {', '.join(missing) if missing else '-'}",
        f"  extra:      {extras or '-'}",
        f"  best first: {profile.best_first or 'source order'}",
    ]
    if profile.shown:
        lines.append(f"  image page: {', '.join(profile.shown)}")
    return lines
