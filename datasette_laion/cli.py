"""Command line: ``datasette laion ...`` (also ``python -m datasette_laion``).

Thin wrappers: each command parses options, calls the library, prints.
"""
import atexit
import faulthandler
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import click

from . import profiles as profiles_module
from . import serving, site
from .version import __version__

DATABASE_FILE = site.DATABASE_FILE
DEMO_ROWS = 50_000
DEMO_IMAGES = "sample-images"  # the demo's pictures, beside its database
DEMO_EMBEDDINGS = "sample-embeddings"  # and their embeddings (the build reads them)
DEMO_METADATA = "metadata.json"  # the metadata the demo serves with (site.demo_metadata)
# build.DEFAULT_BATCH_SIZE (a test checks), here so that loading the command
# group (as every `datasette` command and each server worker does) does not
# import the build and Arrow.
DEFAULT_BATCH_SIZE = 50_000


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "datasette-laion"


@click.group(name="laion")
@click.version_option(__version__, prog_name="datasette-laion")
def laion():
    """Build, sample and serve the LAION-Aesthetics image database."""


@laion.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rows", type=click.IntRange(min=0), default=DEMO_ROWS, show_default=True, help="Rows in all")
@click.option("--files", type=click.IntRange(min=1), default=1, show_default=True, help="Parquet files to spread them over")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files")
@click.option("--profile", type=click.Choice(list(profiles_module.PROFILES)), default=profiles_module.DEFAULT,
              metavar="NAME", show_default=True,
              help="Write the schema of this source profile (`datasette laion profiles` lists them)")
@click.option("--aesthetic-from", type=click.FloatRange(0, 6), default=6.0, show_default=True, metavar="X",
              help="Lowest aesthetic score: 6 as in the 6+ set; lower (4.5, 4.75, 5) as in the larger sets, "
                   "where a tenth of the rows score 6 or more")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write a small picture for each row's URL into this directory (a quarter get none, "
                   "as a quarter of LAION's images are gone), for the site's sample_images_dir")
@click.option("--embeddings", "embeddings_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write CLIP-like image embeddings into this directory: img_emb_NNNN.npy (float16, 768-d) "
                   "for the NNNN-th parquet file, row for row, clustered by the captions' topics; a URL seen "
                   "twice gets near-duplicates, and ~2% more are planted (listed in planted_near_duplicates.json)")
@click.option("--silent", is_flag=True, help="No progress bar")
def sample(outdir, rows, files, seed, profile, aesthetic_from, images_dir, embeddings_dir, silent):
    """Write generated parquet files with the exact schema of a source:
    LAION-Aesthetics v2 by default, or any other profile's.

    Realistic domains, captions, names and scores, plus the awkward rows real
    data has (null captions, odd URLs, markup), and each profile's own
    columns. With --images and --embeddings, pictures and vectors that
    follow the captions' topics, for the demo and for similar images.
    Examples:

    \b
        datasette laion sample /tmp/laion --rows 1000000 --files 7
        datasette laion sample /tmp/pd12m --profile pd12m --rows 200000 --files 2
        datasette laion sample /tmp/s --images /tmp/s/images --embeddings /tmp/s/embeddings
    """
    from tqdm import tqdm

    from . import sample as sample_module

    with tqdm(total=rows, desc="sample", unit="rows", unit_scale=True, disable=silent, file=sys.stderr) as bar:
        paths = sample_module.generate(outdir, rows=rows, files=files, seed=seed, progress=bar.update,
                                       profile=profile, aesthetic_from=aesthetic_from)
    for path in paths:
        click.echo(str(path))
    if images_dir is not None:
        written, without = write_sample_images(paths, images_dir, progress=not silent)
        if not silent:
            click.echo(f"{written:,} images in {images_dir} ({without:,} rows have none)", err=True)
    if embeddings_dir is not None:
        written, planted = write_sample_embeddings(paths, embeddings_dir, seed, progress=not silent)
        if not silent:
            click.echo(f"{rows:,} embeddings in {embeddings_dir} ({len(written)} img_emb_*.npy files, "
                       f"{len(planted):,} planted near-duplicates)", err=True)


def write_sample_images(paths, images_dir, progress=True):
    """The pictures of the rows of parquet ``paths`` into ``images_dir``, with
    a progress bar: (images written, rows without one)."""
    from tqdm import tqdm

    from . import sample_images

    with tqdm(total=sample_images.count_rows(paths), desc="images", unit="rows", unit_scale=True,
              disable=not progress, file=sys.stderr) as bar:
        return sample_images.write_images(sample_images.parquet_rows(paths), images_dir, progress=bar.update)


def write_sample_embeddings(paths, embeddings_dir, seed, progress=True):
    """The embeddings of the rows of parquet ``paths`` into ``embeddings_dir``,
    with a progress bar: (the .npy paths, the planted near-duplicate pairs)."""
    from tqdm import tqdm

    from . import sample_images, sample_vectors

    with tqdm(total=sample_images.count_rows(paths), desc="embeddings", unit="rows", unit_scale=True,
              disable=not progress, file=sys.stderr) as bar:
        return sample_vectors.write_embeddings(paths, embeddings_dir, sample_vectors.sample_shape(seed),
                                               progress=bar.update)


@laion.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--names-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory with artists.csv, celebrities.csv, characters.csv (default: the lists shipped with the package)")
@click.option("--exclude", "exclude", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="URLs or hashes to leave out: text (one per line), CSV or parquet with a url/hash column. Repeatable.")
@click.option("--inspect-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the inspect data (default: inspect.json beside OUT)")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Rows per record batch read and inserted")
@click.option("--profile", type=click.Choice(list(profiles_module.PROFILES)), metavar="NAME",
              help="Read the files as this source profile (default: found from their columns; "
                   "`datasette laion profiles` lists them)")
@click.option("--min-aesthetic", type=float, metavar="X", help="Load only rows with aesthetic >= X")
@click.option("--max-punsafe", type=float, metavar="X", help="Load only rows with punsafe <= X")
@click.option("--min-similarity", type=float, metavar="X", help="Load only rows with (CLIP) similarity >= X")
@click.option("--embeddings", "embeddings", multiple=True, type=click.Path(exists=True, path_type=Path),
              metavar="PATH", help="Image embeddings aligned with INPUTS (.npy, .npz or parquet files, or a directory "
                                   "of them): writes OUT's vectors file, for similar images. Repeatable.")
@click.option("--silent", is_flag=True, help="No progress bars or summary")
def build(out, inputs, names_dir, exclude, inspect_file, batch_size, profile, min_aesthetic, max_punsafe,
          min_similarity, embeddings, silent):
    """Build the SQLite database OUT from image-text parquet INPUTS.

    INPUTS are parquet files, or directories whose *.parquet files are read in
    name order: LAION-Aesthetics, Re-LAION, PD12M, COYO-700M, DataComp-1B or
    CC12M metadata (see `datasette laion profiles`). OUT is replaced only when
    the build succeeds. Example:

        datasette laion build laion-aesthetic-6pls.db data/ --min-aesthetic 6
    """
    from . import build as build_module

    # `kill -USR1 PID` prints where every thread of a build that seems stuck is.
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:
        try:
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
        except (AttributeError, ValueError, OSError):  # no usable stderr
            pass
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = build_module.build(
            out, inputs, names_dir=names_dir, exclude=exclude, inspect_file=inspect_file,
            batch_size=batch_size, progress=not silent, profile=profile,
            min_aesthetic=min_aesthetic, max_punsafe=max_punsafe, min_similarity=min_similarity,
            embeddings=embeddings,
        )
    except build_module.BuildError as ex:
        raise click.ClickException(f"{ex}\nNothing was written: {_unchanged(out)}") from None
    except KeyboardInterrupt:
        click.echo(f"Error: build interrupted. {_unchanged(out)}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not silent:
        click.echo(format_summary(result), err=True)


@laion.command()
def profiles():
    """List the source profiles: the datasets `build` reads, each with its
    source, approximate rows, the images columns it fills and from which of
    its columns, the ones left NULL, and the columns kept as extras. Example:

        datasette laion profiles
    """
    blocks = ["\n".join(profiles_module.describe(profile)) for profile in profiles_module.PROFILES.values()]
    click.echo("\n\n".join(blocks))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _unchanged(out):
    if out.exists():
        return f"{out} is as it was; fix the problem and run the build again."
    return "fix the problem and run the build again."


def format_summary(result):
    lines = [
        f"Built {result.path} ({result.size / 1e6:,.1f} MB) in {result.timings.get('total', 0):.1f}s",
        f"  profile:     {result.profile}",
        f"  images:      {result.rows:,} rows from {result.source_rows:,} parquet rows",
    ]
    if result.filter:
        lines.append(f"  filter:      {result.filter}: {result.filtered:,} rows left out, "
                     f"{result.source_rows - result.filtered:,} kept")
    lines += [
        f"  excluded:    {result.excluded:,} rows"
        + "".join(f"\n    {e['name']}: {e['rows_excluded']:,} rows ({e['urls']:,} URLs, {e['hashes']:,} hashes)" for e in result.exclusions),
        f"  domains:     {result.domains:,} hosts, {result.registered_domains:,} registered domains "
        f"({result.rows_without_domain:,} rows have no host)",
    ]
    for table, count in result.names.items():
        lines.append(f"  {table + ':':<13}{count:,} names")
    lines.append(f"  inspect:     {result.inspect_path} (database name {result.database_name!r})")
    if result.vectors is not None:
        facts = result.vector_facts
        lines.append(f"  vectors:     {result.vectors} ({result.vectors.stat().st_size / 1e6:,.1f} MB, "
                     f"{facts['vectors_dim']}-d; {facts['vectors_index']})")
        lines.append(f"  near-dups:   {facts['near_duplicate_rows']:,} rows with a near-duplicate (cosine >= "
                     f"{facts['near_duplicate_threshold']}), {facts['near_duplicate_clusters']:,} clusters, "
                     f"{facts['near_duplicate_copies']:,} copies beyond each cluster's first")
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items() if k != "total")
    lines.append(f"  steps:       {steps}")
    for note in result.notes:
        lines.append(f"  note:        {note}")
    return "\n".join(lines)


def _serve_args(dbs, inspect_file, host, port, extra, metadata=None):
    """The options of `datasette serve` that serve ``dbs`` (if any: else the
    metadata's database_path) as the site does."""
    args = ["-m", str(metadata or site.METADATA_PATH), "-h", host, "-p", str(port)]
    for db in reversed(dbs):
        args = ["-i", str(db)] + args
    if inspect_file is not None:
        args += ["--inspect-file", str(inspect_file)]
    return args + site.setting_args() + list(extra)


def _find_inspect_file(dbs, inspect_file):
    """The inspect file to serve ``dbs`` with: the one given, or the
    inspect.json beside each database (merged into one temporary file when
    they are several), warning when a database has no entry."""
    if not dbs:  # the plugin configuration names the database and its inspect file
        if inspect_file is not None and not Path(inspect_file).exists():
            raise click.ClickException(f"{inspect_file}: inspect file not found")
        return inspect_file
    paths = [Path(inspect_file)] if inspect_file else list(dict.fromkeys(Path(db).parent / "inspect.json" for db in dbs))
    merged = {}
    for path in paths:
        if not path.exists():
            if inspect_file:
                raise click.ClickException(f"{path}: inspect file not found")
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as ex:
            raise click.ClickException(f"{path}: not a readable inspect file ({ex})") from None
        for name, entry in data.items():
            merged.setdefault(name, entry)
    for db in dbs:
        name = Path(db).stem  # the name Datasette gives it (build.database_name)
        if name not in merged:
            click.echo(f"Note: no inspect data for database {name!r} (inspect.json beside it); its counts "
                       "will be computed at start-up (write one with `datasette laion build`).", err=True)
    if not merged:
        return None
    if len(paths) == 1:
        return paths[0]
    fd, combined = tempfile.mkstemp(prefix="datasette-laion-inspect-", suffix=".json")
    with os.fdopen(fd, "w") as fp:
        json.dump(merged, fp)
    atexit.register(lambda: Path(combined).unlink(missing_ok=True))
    return Path(combined)


def _split_dbs(ctx, args, metadata):
    """(DBs, the other arguments): the leading arguments that are not
    options (none, as on Fly, where the metadata's database_path names it)."""
    dbs = []
    for arg in args:
        if arg.startswith("-"):
            break
        try:
            dbs.append(click.Path(exists=True, dir_okay=False, path_type=Path).convert(arg, None, ctx))
        except click.BadParameter as ex:
            raise click.BadParameter(ex.message, ctx=ctx, param_hint="'DB'") from None
    if dbs:
        return dbs, list(args[len(dbs):])
    if not site.configured_database_path(metadata or site.METADATA_PATH):
        raise click.UsageError("Missing argument 'DB' (or a --metadata file whose datasette-laion plugin "
                               "configuration has a database_path).", ctx=ctx)
    return [], list(args)


@laion.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--inspect-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Inspect data (default: inspect.json beside DB)")
@click.option("-m", "--metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Metadata (default: the project's metadata.yml)")
@click.option("-h", "--host", default="127.0.0.1", show_default=True)
@click.option("-p", "--port", type=int, default=8001, show_default=True)
@click.option("--workers", type=click.IntRange(min=1),
              help="Server processes sharing the port, each ~130 MB (default: one per CPU core, "
                   f"at most {serving.MAX_DEFAULT_WORKERS}; 1: one process, as `datasette serve`)")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request (off: a busy public site spends its CPU on answers, not on logs)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[DB]... [SERVE_OPTIONS]...")
@click.pass_context
def serve(ctx, inspect_file, metadata, host, port, workers, access_log, args):
    """Serve built databases as the site is deployed: immutable, with their
    inspect data, the project's metadata and settings, in several worker
    processes. Several databases are served side by side, each with its own
    search, and the home page lists them. Other options go to `datasette
    serve`. Examples:

        datasette laion serve laion-aesthetic-6pls.db --port 8001
        datasette laion serve pd12m.db laion-aesthetic-6pls.db

    Without DB, the database is the one the metadata's plugin configuration
    names (database_path), as on Fly.
    """
    dbs, extra = _split_dbs(ctx, args, metadata)
    serve_args = _serve_args(dbs, _find_inspect_file(dbs, inspect_file), host, port, extra, metadata)
    if not dbs and serving.parse_serve_args(serve_args).params["files"]:
        raise click.UsageError("DB goes first: datasette laion serve DB [SERVE_OPTIONS]...", ctx=ctx)
    serving.run(serve_args, workers=workers or serving.default_workers(), access_log=access_log,
                explicit=workers is not None)


@laion.command()
@click.option("--rows", type=click.IntRange(min=1), default=DEMO_ROWS, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to keep the sample (default: ~/.cache/datasette-laion)")
@click.option("-h", "--host", default="127.0.0.1", show_default=True)
@click.option("-p", "--port", type=int, default=8001, show_default=True)
@click.option("--rebuild", is_flag=True, help="Build the sample again even if it is there")
def demo(rows, directory, host, port, rebuild):
    """Build a sample database (once, cached) and serve the full site on it.

    Thumbnails are generated pictures, served by the site itself.

        datasette laion demo
    """
    directory = directory or default_cache_dir()
    db = ensure_demo_database(directory, rows, rebuild=rebuild)
    metadata = db.parent / DEMO_METADATA
    metadata.write_text(json.dumps(site.demo_metadata(db.parent / DEMO_IMAGES), indent=2) + "\n")
    click.echo(f"Serving {db} on http://{host}:{port}/", err=True)
    serving.run(_serve_args([db], db.parent / "inspect.json", host, port, (), metadata), workers=serving.default_workers(),
                access_log=False)


def ensure_demo_database(directory, rows, rebuild=False, progress=True):
    """The demo database in ``directory``, built from generated parquet unless
    an up-to-date one is already there, with the rows' pictures in
    DEMO_IMAGES beside it."""
    from . import build as build_module
    from . import sample as sample_module
    from . import sample_images

    directory = Path(directory)
    db = directory / DATABASE_FILE
    marker = directory / "demo.json"
    wanted = {"rows": rows, "seed": 0, "version": __version__, "images": DEMO_IMAGES, "embeddings": DEMO_EMBEDDINGS}
    if not rebuild and db.exists() and (directory / "inspect.json").exists():
        try:
            if json.loads(marker.read_text()) == wanted:
                return db
        except (OSError, ValueError):
            pass
    parquet_dir = directory / "parquet"
    if parquet_dir.exists():
        for old in parquet_dir.glob("*.parquet"):
            old.unlink()
    click.echo(f"Generating {rows:,} sample rows in {parquet_dir}", err=True)
    paths = sample_module.generate(parquet_dir, rows=rows, files=2 if rows >= 1000 else 1, seed=0)
    images_dir = directory / DEMO_IMAGES
    if images_dir.exists():
        for old in images_dir.iterdir():
            if sample_images.NAME_PATTERN.fullmatch(old.name):
                old.unlink()
    write_sample_images(paths, images_dir, progress=progress)
    embeddings_dir = directory / DEMO_EMBEDDINGS  # so that "similar images" shows in the demo
    write_sample_embeddings(paths, embeddings_dir, seed=0, progress=progress)
    try:
        result = build_module.build(db, [parquet_dir], progress=progress, embeddings=[embeddings_dir])
    except build_module.BuildError as ex:
        raise click.ClickException(str(ex)) from None
    if progress:
        click.echo(format_summary(result), err=True)
    marker.write_text(json.dumps(wanted))
    return db
