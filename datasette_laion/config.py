"""The plugin's configuration: ``plugins: datasette-laion:`` in metadata.

Every key has a default here and is checked once, at start-up.
"""
import os
import string
from pathlib import Path

PLUGIN = "datasette-laion"

DEFAULTS = {
    # The LAION database to open, immutable, at start-up (as `datasette -i`
    # would). When the file is not there yet, the site starts anyway and says
    # that the database has not been uploaded. Optional: a database opened
    # with `-i` (as `datasette laion serve` does) needs no entry here.
    "database_path": None,
    # Its inspect data (default: inspect.json beside database_path).
    "inspect_file": None,
    # The name the site serves the LAION database under.
    "database": "laion-aesthetic-6pls",
    # Thumbnails of rows with punsafe at or above this are hidden until clicked.
    "safe_mode_threshold": 0.5,
    # Where a thumbnail's <img> loads from: a URL template with {url} (the
    # image's URL as it is) or {url_encoded} (percent-encoded, every
    # character but letters, digits and _.-~), such as
    # "https://my-imgproxy.fly.dev/insecure/rs:fit:256:256/plain/{url_encoded}":
    # an image proxy that fetches and shrinks the image, so that visitors'
    # browsers do not ask thousands of hosts for multi-megabyte originals.
    # An absolute http(s) URL, or a path on this site ("/..."). None: the
    # image's own URL. The thumbnail's link always goes to the image's own URL.
    "thumbnail_url": None,
    # A directory of generated sample images (`datasette laion sample
    # --images`), served at /-/laion/sample-image?url=... (what the demo sets
    # thumbnail_url to). None: that route answers 404.
    "sample_images_dir": None,
    # Columns rendered as thumbnails: {table: [column, ...]}.
    "image_columns": {"images": ["url"]},
    # Paths robots are asked not to crawl (robots.txt), under the database.
    "robots_disallow": ["/images", "/images_fts", "/domain", "/registered_domain"],
    # Tables whose pages only offer what an index answers (guard.py), whatever
    # their size: the 12M-row images table, so that the demo and the tests
    # behave as the site does. Their full-text index tables are guarded too.
    "guarded_tables": ["images"],
    # Any other table with at least this many rows (by the inspect data; a
    # table whose count is unknown counts as big) is guarded as well. Smaller
    # tables are read whole in well under the time limit (the 288k-row domain
    # table: ~50 ms).
    "big_table_rows": 1_000_000,
    # Megabytes of rendered pages each server process keeps (page_cache.py:
    # the home and database pages and the listings, for anonymous visitors);
    # 0 turns the page cache off. The environment variable
    # DATASETTE_LAION_PAGE_CACHE_MB, when set, overrides this.
    "page_cache_mb": 16,
    # Counts of recent searches kept per process (kept_counts.KeptCounts): a
    # search's next pages, and the same search again, are not counted again.
    # 0 turns this off. DATASETTE_LAION_COUNTS_KEPT, when set, overrides it.
    "counts_kept": 4096,
}


class ConfigError(Exception):
    pass


def plugin_config(datasette):
    """The effective configuration: DEFAULTS overlaid with metadata's,
    validated; read once (at start-up) and kept."""
    config = getattr(datasette, "_laion_config", None)
    if config is None:
        config = dict(DEFAULTS)
        config.update(datasette.plugin_config(PLUGIN) or {})
        config = datasette._laion_config = validate(config)
    return config


def raw_plugin_config(datasette):
    """DEFAULTS overlaid with metadata's, unchecked (before start-up)."""
    return {**DEFAULTS, **(datasette.plugin_config(PLUGIN) or {})}


def validate(config):
    """Raise ConfigError for a value that cannot work; return it tidied."""
    threshold = config["safe_mode_threshold"]
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise ConfigError(f"{PLUGIN}: safe_mode_threshold must be a number from 0 to 1, not {threshold!r}")
    columns = config["image_columns"]
    if not isinstance(columns, dict) or not all(
        isinstance(t, str) and isinstance(c, list) and all(isinstance(x, str) for x in c) for t, c in columns.items()
    ):
        raise ConfigError(f"{PLUGIN}: image_columns must map table names to lists of column names")
    robots = config["robots_disallow"]
    if not isinstance(robots, list) or not all(isinstance(p, str) and p.startswith("/") for p in robots):
        raise ConfigError(f"{PLUGIN}: robots_disallow must be a list of paths starting with /")
    guarded = config["guarded_tables"]
    if not isinstance(guarded, list) or not all(isinstance(t, str) for t in guarded):
        raise ConfigError(f"{PLUGIN}: guarded_tables must be a list of table names")
    rows = config["big_table_rows"]
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise ConfigError(f"{PLUGIN}: big_table_rows must be a whole number of rows, 0 or more, not {rows!r}")
    for key, variable, kind, what in (("page_cache_mb", "DATASETTE_LAION_PAGE_CACHE_MB", float, "a number of megabytes"),
                                      ("counts_kept", "DATASETTE_LAION_COUNTS_KEPT", int, "a whole number")):
        from_env = os.environ.get(variable)
        if from_env is not None:
            try:
                config[key] = kind(from_env)
            except ValueError:
                raise ConfigError(f"{variable} must be {what}, not {from_env!r}") from None
    cache_mb = config["page_cache_mb"]
    if not isinstance(cache_mb, (int, float)) or isinstance(cache_mb, bool) or not 0 <= cache_mb <= 4096:
        raise ConfigError(f"{PLUGIN}: page_cache_mb must be a number of megabytes from 0 to 4096, not {cache_mb!r}")
    counts = config["counts_kept"]
    if not isinstance(counts, int) or isinstance(counts, bool) or not 0 <= counts <= 1_000_000:
        raise ConfigError(f"{PLUGIN}: counts_kept must be a whole number from 0 to 1000000, not {counts!r}")
    config["thumbnail_url"] = _thumbnail_template(config["thumbnail_url"])
    images_dir = config["sample_images_dir"]
    if images_dir is not None:
        if not isinstance(images_dir, str) or not images_dir:
            raise ConfigError(f"{PLUGIN}: sample_images_dir must be the path of a directory, not {images_dir!r}")
        config["sample_images_dir"] = Path(images_dir)
    if config["database_path"] is not None:
        config["database_path"] = Path(config["database_path"])
        if config["inspect_file"] is None:
            config["inspect_file"] = config["database_path"].parent / "inspect.json"
    if config["inspect_file"] is not None:
        config["inspect_file"] = Path(config["inspect_file"])
    return config


THUMBNAIL_PLACEHOLDERS = ("url", "url_encoded")


def _thumbnail_template(template):
    """thumbnail_url checked: None, or a template that str.format() fills
    with url and url_encoded (render.thumbnail_src)."""
    if template is None:
        return None
    if not isinstance(template, str):
        raise ConfigError(f"{PLUGIN}: thumbnail_url must be a URL template (a string), not {template!r}")
    if not template.startswith(("http://", "https://", "/")) or template.startswith("//"):
        raise ConfigError(f"{PLUGIN}: thumbnail_url must start with http://, https:// or /, not {template!r}")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as ex:
        raise ConfigError(f"{PLUGIN}: thumbnail_url is not a valid template ({ex}); "
                          "write a literal { or } as {{ or }}") from None
    for name, spec, conversion in fields:
        if name not in THUMBNAIL_PLACEHOLDERS or spec or conversion:
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"{PLUGIN}: thumbnail_url has an unknown placeholder {field}; "
                              "the placeholders are {url} and {url_encoded}")
    if not fields:
        raise ConfigError(f"{PLUGIN}: thumbnail_url must contain {{url}} or {{url_encoded}}, where the image's "
                          f"URL goes: {template!r}")
    return template
