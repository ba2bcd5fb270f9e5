"""SQL text of the database the build writes, as named constants."""

# Connection settings for writing the temporary build file. Nothing needs a
# journal: a build that fails is thrown away whole, never repaired.
BUILD_PRAGMAS = """
pragma journal_mode = off;
pragma synchronous = off;
pragma locking_mode = exclusive;
pragma temp_store = file;
pragma cache_size = -32768;  -- 32 MB: the load only appends
"""

PAGE_SIZE = 4096

# For CREATE INDEX: SQLite's sorter spills runs of cache_size and sorts and
# merges them on a second thread (measured at 12M rows: 27 s -> 13 s per index).
INDEX_PRAGMAS = """
pragma threads = 2;
pragma cache_size = -16384;
"""

# One row per parquet row, best first: rowid 1 has the highest aesthetic score.
# A rowid table (no INTEGER PRIMARY KEY), as in the original, so that
# /images?_sort=rowid and /images/<rowid> keep working. Extra source columns
# are appended after domain_id.
CREATE_IMAGES = """
create table images (
  url text,
  text text,                    -- the caption (alt text); NULL for some rows
  width integer,
  height integer,
  similarity real,              -- CLIP image/text cosine similarity
  punsafe real,                 -- probability that the image is unsafe (NSFW)
  pwatermark real,              -- probability that the image is watermarked
  aesthetic real,               -- LAION aesthetic predictor score
  hash text,                    -- LAION's 64-bit hash, as text (JSON-safe)
  __index_level_0__ integer,    -- pandas index left in the source files
  domain_id integer references domain(id),
  url_hash integer{extra_columns}              -- url_hash(url): CRC-32, for exact URL look-ups
)
"""

# Hosts of the URLs, as functions.domain() gives them; NULL-host rows have a
# NULL domain_id and no row here.
CREATE_DOMAIN = """
create table domain (
  id integer primary key,
  domain text unique,
  image_counts integer,
  registered_domain_id integer references registered_domain(id)
)
"""

# Registrable domains (Public Suffix List): pinimg.com for i.pinimg.com.
CREATE_REGISTERED_DOMAIN = """
create table registered_domain (
  id integer primary key,
  registered_domain text unique,
  image_counts integer,
  hosts integer                 -- rows of domain under it
)
"""

# A names table (artists, celebrities, characters): the CSV's columns, then
# the number of captions that match the name as an FTS5 phrase.
CREATE_NAMES = """
create table [{table}] (
  id integer primary key,
  name text not null unique,{columns}
  image_counts integer
)
"""

# What was built from what: one row per parquet file read.
CREATE_SOURCE_FILES = """
create table source_files (
  id integer primary key,
  name text,          -- file name
  rows integer,       -- rows in the file
  loaded integer,     -- rows loaded (rows - excluded)
  bytes integer,
  sha256 text         -- of the file (stats.Checksums)
)
"""

# One row per --exclude list: entries in it and rows it removed.
CREATE_EXCLUSIONS = """
create table exclusions (
  id integer primary key,
  name text,          -- file name of the list
  urls integer,       -- URL entries in the list
  hashes integer,     -- hash entries in the list
  rows_excluded integer
)
"""

# Key/value facts about the build (version, date, totals).
CREATE_BUILD_INFO = """
create table build_info (
  key text primary key,
  value
)
"""

# Statistics for the statistics page (stats.py): figures over every row,
# accumulated in the build's partition pass.
CREATE_STATS_HISTOGRAM = """
create table stats_histogram (
  id integer primary key,   -- buckets of a metric in order
  metric text not null,     -- aesthetic, punsafe, pwatermark, width, height, aspect_ratio, caption_length
  bucket_start real,        -- value >= bucket_start (NULL: no lower bound)
  bucket_end real,          -- value < bucket_end (NULL: no upper bound)
  count integer not null    -- rows in the bucket
)
"""
INSERT_STATS_HISTOGRAM = "insert into stats_histogram (metric, bucket_start, bucket_end, count) values (?, ?, ?, ?)"
# <metric>.count / .missing / .min / .max / .mean, and rows over thresholds.
CREATE_STATS_FIGURES = """
create table stats_figures (
  key text primary key,
  value
)
"""
INSERT_STATS_FIGURE = "insert into stats_figures (key, value) values (?, ?)"

# The full-text index, exactly as `sqlite-utils enable-fts` makes it, so that
# Datasette's table search finds it. It is filled by copying the segments of
# an identical contentless index built alongside the load (see build.py).
CREATE_FTS = """
create virtual table [images_fts] using fts5 (
  [text],
  content=[images]
)
"""
CREATE_FTS_SIDE = """
create virtual table [images_fts] using fts5 (
  [text],
  content=''
)
"""
# The index proper; images_fts_config keeps its own rows (the side table's
# holds build-time tuning that is no business of the served database).
FTS_SHADOW_TABLES = ("images_fts_data", "images_fts_idx", "images_fts_docsize")
# In-memory term hash of the side index before it is written as a segment.
FTS_HASH_SIZE = 64 * 1024 * 1024
# The side index is written append-only: it needs little page cache.
FTS_PRAGMAS = "pragma cache_size = -16384;"

# Every sort and filter the site offers has an index. Rows are loaded best
# first, so this one is kept up during the load at almost no cost (descending,
# so that each new entry is appended); it serves ascending sorts too.
CREATE_AESTHETIC_INDEX = "create index images_aesthetic on images(aesthetic desc)"
# The others are built after the load, from a scan.
CREATE_INDEXES = [
    ("images_punsafe", "create index images_punsafe on images(punsafe)"),
    ("images_pwatermark", "create index images_pwatermark on images(pwatermark)"),
    ("images_domain_id", "create index images_domain_id on images(domain_id)"),
    ("images_url_hash", "create index images_url_hash on images(url_hash)"),
    ("domain_registered_domain_id", "create index domain_registered_domain_id on domain(registered_domain_id)"),
    ("registered_domain_image_counts", "create index registered_domain_image_counts on registered_domain(image_counts)"),
    ("domain_image_counts", "create index domain_image_counts on domain(image_counts)"),
]

INSERT_DOMAIN = "insert into domain (id, domain, image_counts, registered_domain_id) values (?, ?, ?, ?)"
INSERT_REGISTERED_DOMAIN = (
    "insert into registered_domain (id, registered_domain, image_counts, hosts) values (?, ?, ?, ?)"
)

# Figures stored in build_info, each answered by an index.
BUILD_FIGURES = {
    "punsafe_over_0_5": "select count(*) from images where punsafe > 0.5",
    "punsafe_1": "select count(*) from images where punsafe >= 1.0",
    "pwatermark_over_0_8": "select count(*) from images where pwatermark > 0.8",
    "aesthetic_min": "select min(aesthetic) from images",
    "aesthetic_max": "select max(aesthetic) from images",
}

# Images matching a phrase; the argument is already an FTS5 phrase.
COUNT_PHRASE = "select count(*) from images_fts where images_fts match ?"

# Datasette's own list of tables (Database.table_names()), for inspect data.
TABLE_NAMES = "select name from sqlite_master where type = 'table'"
