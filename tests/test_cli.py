import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from datasette.cli import cli as datasette_cli

from datasette_laion import build, cli, sample, site


def invoke(*args):
    return CliRunner().invoke(datasette_cli, ["laion", *map(str, args)], catch_exceptions=False)


def test_registered_under_datasette_and_python_m():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("build", "sample", "serve", "demo"):
        assert command in result.output
    run = subprocess.run([sys.executable, "-m", "datasette_laion", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "build" in run.stdout


def test_sample_command(tmp_path):
    result = invoke("sample", tmp_path, "--rows", 500, "--files", 2, "--seed", 3, "--silent")
    assert result.exit_code == 0
    paths = result.output.split()
    assert len(paths) == 2 and all(p.endswith(".parquet") for p in paths)


def test_build_command_summary(tmp_path, parquet_dir):
    out = tmp_path / site.DATABASE_FILE
    result = invoke("build", out, parquet_dir)
    assert result.exit_code == 0, result.output
    for line in ("images:      12,000 rows from 12,000 parquet rows", "excluded:    0 rows", "domains:", "steps:"):
        assert line in result.output
    assert f"Built {out} (" in result.output
    assert (tmp_path / "inspect.json").exists()


def test_build_errors(tmp_path, parquet_dir):
    out = tmp_path / site.DATABASE_FILE
    result = invoke("build", out, tmp_path / "missing")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path / 'missing'}: no such file or directory\n"
        "Nothing was written: fix the problem and run the build again.\n"
    )
    out.write_bytes(b"previous database")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    result = invoke("build", out, bad)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: truncated parquet file")
    assert result.output.endswith(f"Nothing was written: {out} is as it was; fix the problem and run the build again.\n")
    assert out.read_bytes() == b"previous database"
    result = invoke("build", tmp_path, parquet_dir)
    assert result.exit_code == 2 and "is a directory" in result.output


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(built, tmp_path):
    """`datasette laion serve` on the built database, as a user runs it."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette_laion", "serve", str(built.path), "-p", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/-/versions.json", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(timeout=10)


def test_serve_over_http(server, built):
    databases = httpx.get(server + "/-/databases.json").json()
    assert [(d["name"], d["is_mutable"]) for d in databases] == [("laion-aesthetic-6pls", False)]
    settings = httpx.get(server + "/-/settings.json").json()
    for key, value in site.settings().items():
        assert settings[key] == value
    rows = httpx.get(server + "/laion-aesthetic-6pls/images.json?_search=dog&_shape=array").json()
    assert rows and all("dog" in r["text"].lower() for r in rows)
    # the bookmarked URLs of the original site
    for path in [
        "/laion-aesthetic-6pls/images?_search=lemur",
        "/laion-aesthetic-6pls/domain?_sort_desc=image_counts",
        "/laion-aesthetic-6pls/artists?_sort_desc=image_counts",
        '/laion-aesthetic-6pls/images?_search="Thomas Kinkade"&_sort=rowid',
    ]:
        assert httpx.get(server + path).status_code == 200, path
    domains = httpx.get(server + "/laion-aesthetic-6pls/domain.json?_shape=array&_size=1").json()
    assert domains[0]["domain"] == "i.pinimg.com"


def _serving(args):
    """`datasette laion serve ARGS` in a process of its own: (process, base URL)."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "datasette_laion", "serve", *map(str, args), "-p", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/-/versions.json", timeout=1)
            return process, base
        except httpx.TransportError:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_serve_several_databases_side_by_side(tmp_path):
    """Two builds into one folder share its inspect.json (the second keeps the
    first's entry), and `serve a.db b.db` serves both, each with its counts
    from it and its own search; the home page lists both."""
    (tmp_path / "dbs").mkdir()
    for name, profile in (("pd12m", "pd12m"), ("six", None)):
        sample.generate(tmp_path / name, rows=800, files=1, seed=3, profile=profile)
        build.build(tmp_path / "dbs" / f"{name}.db", [tmp_path / name], progress=False, workers=1)
    inspect = json.loads((tmp_path / "dbs" / "inspect.json").read_text())
    assert set(inspect) == {"pd12m", "six"}
    inspect["pd12m"]["tables"]["domain"]["count"] = 4242  # counts come from here, not counted again
    (tmp_path / "dbs" / "inspect.json").write_text(json.dumps(inspect))
    process, base = _serving([tmp_path / "dbs" / "pd12m.db", tmp_path / "dbs" / "six.db"])
    try:
        databases = httpx.get(base + "/-/databases.json").json()
        assert [d["name"] for d in databases] == ["pd12m", "six"]
        home = httpx.get(base + "/").text
        assert 'action="/pd12m/images"' in home and 'action="/six/images"' in home
        tables = {t["name"]: t["count"] for t in httpx.get(base + "/pd12m.json").json()["tables"]}
        assert tables["domain"] == 4242
        for name in ("pd12m", "six"):
            rows = httpx.get(f"{base}/{name}/images.json?_search=dog&_shape=array").json()
            assert rows and all("dog" in r["text"].lower() for r in rows)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_takes_counts_from_the_inspect_file(built, tmp_path):
    """Counts shown are the inspect file's: nothing is counted at start-up."""
    import asyncio

    data = json.loads(built.inspect_path.read_text())
    data["laion-aesthetic-6pls"]["tables"]["images"]["count"] = 424242
    fake = tmp_path / "inspect.json"
    fake.write_text(json.dumps(data))
    ds = site.make_datasette(built.path, fake)

    async def fetch():
        return (await ds.client.get("/laion-aesthetic-6pls.json")).json()

    tables = {t["name"]: t["count"] for t in asyncio.run(fetch())["tables"]}
    assert tables["images"] == 424242


def test_demo_builds_once_then_reuses(tmp_path):
    db = cli.ensure_demo_database(tmp_path, rows=2000, progress=False)
    assert db.name == "laion-aesthetic-6pls.db" and (tmp_path / "inspect.json").exists()
    mtime = db.stat().st_mtime_ns
    assert cli.ensure_demo_database(tmp_path, rows=2000, progress=False) == db
    assert db.stat().st_mtime_ns == mtime
    cli.ensure_demo_database(tmp_path, rows=2500, progress=False)
    assert db.stat().st_mtime_ns != mtime


def test_command_group_loads_without_the_build():
    """`datasette` loads the plugin's commands for every command (and each
    server worker does): that must not import the build, nor Arrow; the
    batch size the help shows is the build's."""
    import subprocess
    import sys

    from datasette_laion import build
    from datasette_laion import cli as laion_cli

    code = ("import sys, datasette.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow' or m == 'datasette_laion.build'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert laion_cli.DEFAULT_BATCH_SIZE == build.DEFAULT_BATCH_SIZE
