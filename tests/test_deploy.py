"""The Fly deployment bundle: fly.toml, scripts/deploy.sh, scripts/upload.sh
(scripts/fetch-data.sh: tests/test_fetch_data.py, but for its usage line here).

Nothing here talks to Fly or the internet: `flyctl` is tests/fakes/flyctl (it
records its calls and plays the app, its volumes and machines), the server is
the generated Dockerfile's own command run locally with a temporary directory
as /data.
"""
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from datasette.utils import value_as_boolean

from datasette_laion import site

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: only the fly.toml tests need it
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
FAKES = Path(__file__).resolve().parent / "fakes"
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
DB_NAME = site.DATABASE_NAME
SECRET_RE = re.compile(rb"DATASETTE_SECRET|\b[0-9a-f]{64}\b")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# This Python's bin first: the scripts and the fake run `python3`, and this
# one starts faster than a shim and has what the scripts need.
BASE_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
FAKE_PATH = f"{FAKES}{os.pathsep}{BASE_PATH}"


def run(script, *args, env=None, input=None, timeout=120):
    return subprocess.run(
        [str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
        env={**os.environ, "PATH": BASE_PATH, "DEPLOY_PYTHON": sys.executable, **(env or {})},
        input=input, timeout=timeout, check=False,
    )


def setuptools_can_build_offline():
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 77


def dockerfile_cmd(directory):
    """The Dockerfile's CMD as argv (shell form, as /bin/sh -c runs it)."""
    lines = (Path(directory) / "Dockerfile").read_text().splitlines()
    cmd = [line for line in lines if line.startswith("CMD ")]
    assert len(cmd) == 1, lines
    return shlex.split(cmd[0][len("CMD "):])


# -- fly.toml ---------------------------------------------------------------

def toml(path):
    if tomllib is None:
        pytest.skip("reading TOML needs Python 3.11 (tomllib)")
    return tomllib.loads(Path(path).read_text())


def test_fly_toml_is_the_machines_format():
    config = toml(ROOT / "fly.toml")
    assert config["app"] and config["primary_region"]
    assert "services" not in config  # the old format `datasette publish fly` writes
    assert config["mounts"]["destination"] == "/data"
    assert re.fullmatch(r"[a-z0-9_]+", config["mounts"]["source"])
    service = config["http_service"]
    assert service["internal_port"] == 8080 and service["force_https"] is True
    assert service["auto_stop_machines"] == "off" and service["min_machines_running"] >= 1
    assert service["concurrency"]["type"] == "requests"
    assert 0 < service["concurrency"]["soft_limit"] < service["concurrency"]["hard_limit"]
    [check] = service["checks"]
    assert (check["method"], check["path"]) == ("GET", "/-/laion/health")
    [vm] = config["vm"]
    assert vm["memory"] == "4gb"  # see the comment above [[vm]]


# -- deploy.sh --dry-run ----------------------------------------------------

DRY_RUN_OPTIONS = {"--app": "laion-test", "--region": "ams", "--volume": "laion_test", "--volume-size": "20"}


@pytest.fixture(scope="session")
def fake_path_env(tmp_path_factory):
    """PATH with the fake flyctl first, and its world in a fresh directory."""
    state = tmp_path_factory.mktemp("fly")
    return {"PATH": FAKE_PATH, "FAKE_FLY_STATE": str(state)}


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory, fake_path_env):
    out = tmp_path_factory.mktemp("dry") / "deploy"
    options = [x for pair in DRY_RUN_OPTIONS.items() for x in pair]
    result = run("deploy.sh", *options, "--dry-run", out, env=fake_path_env)
    if result.returncode and "could not build the wheel" in result.stderr and not setuptools_can_build_offline():
        pytest.skip("building the wheel needs setuptools>=77 in this environment, or PyPI to fetch it:\n" + result.stderr)
    assert result.returncode == 0, result.stderr
    assert not (Path(fake_path_env["FAKE_FLY_STATE"]) / "calls.jsonl").exists(), "--dry-run called flyctl"
    return out


@pytest.fixture(scope="session")
def wheel(dry_run):
    [path] = (dry_run / "wheels").glob("*.whl")
    return path


def test_dry_run_writes_the_whole_deployment(dry_run, wheel):
    files = sorted(str(p.relative_to(dry_run)) for p in dry_run.rglob("*") if p.is_file())
    assert files == ["Dockerfile", "constraints.txt", "fly.toml", "metadata.json", f"wheels/{wheel.name}"]


def test_dry_run_refuses_an_existing_directory(tmp_path):
    result = run("deploy.sh", "--dry-run", tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path} already exists; give a new directory to --dry-run\n"


def test_cmd_opens_the_database_once_through_the_plugin_config(dry_run):
    argv = dockerfile_cmd(dry_run)
    # one worker process per vCPU of fly.toml's [[vm]] (shared-cpu-2x)
    assert argv[:6] == ["exec", "datasette", "laion", "serve", "--workers", "2"]
    # no -i, no database file, no /data/*.db glob, no bash -c wrapper
    assert "-i" not in argv and "--immutable" not in argv and "--create" not in argv
    assert not any("/data" in arg or arg.endswith(".db") for arg in argv), argv
    options_with_values = {"--host", "--inspect-file", "--metadata", "--version-note", "--setting", "--port"}
    i, positional = 6, []
    while i < len(argv):
        if argv[i] == "--setting":
            i += 3
        elif argv[i] in options_with_values:
            i += 2
        elif argv[i].startswith("--"):
            i += 1
        else:
            positional.append(argv[i])
            i += 1
    assert positional == []
    assert argv[argv.index("--metadata") + 1] == "metadata.json"
    metadata = json.loads((dry_run / "metadata.json").read_text())
    assert metadata["plugins"]["datasette-laion"]["database_path"] == f"/data/laion/{DB_NAME}.db"
    assert metadata["plugins"]["datasette-laion"]["inspect_file"] == "/data/laion/inspect.json"
    # the project's metadata, merged, with no `allow: false` for a duplicate
    assert set(metadata.get("databases", {})) <= {DB_NAME}
    assert '"allow"' not in json.dumps(metadata)
    project = site.metadata()
    assert metadata["about"] == project["about"]
    assert metadata.get("databases") == project.get("databases")
    for key, value in (project.get("plugins") or {}).get("datasette-laion", {}).items():
        if key not in ("database_path", "inspect_file"):
            assert metadata["plugins"]["datasette-laion"][key] == value


def test_cmd_has_no_glued_settings(dry_run):
    argv = dockerfile_cmd(dry_run)
    positions = [i for i, arg in enumerate(argv) if arg == "--setting"]
    assert len(positions) == len(site.settings())
    for i in positions:
        assert argv[i + 1] in site.settings(), argv[i:i + 3]
        assert not argv[i + 2].startswith("-") and "--" not in argv[i + 2], argv[i:i + 3]
    assert not any("--setting" in arg and arg != "--setting" for arg in argv)


@pytest.mark.parametrize("name,value", sorted(site.settings().items()))
def test_cmd_has_every_setting(dry_run, name, value):
    argv = dockerfile_cmd(dry_run)
    values = [argv[i + 2] for i, arg in enumerate(argv[:-2]) if arg == "--setting" and argv[i + 1] == name]
    assert len(values) == 1, f"--setting {name} appears {len(values)} times"
    if isinstance(value, bool):
        assert value_as_boolean(values[0]) is value
    else:
        assert values[0] == str(value)


def test_plugin_is_installed_from_the_shipped_wheel(dry_run, wheel):
    lines = (dry_run / "Dockerfile").read_text().splitlines()
    [pip] = [line for line in lines if line.startswith("RUN pip install")]
    words = shlex.split(pip)
    assert f"wheels/{wheel.name}" in words
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert wheel.name == f"datasette_laion-{VERSION}-py3-none-any.whl"
    # the wheel is this working tree: same version, same code, same data files
    with zipfile.ZipFile(wheel) as zf:
        [metadata_name] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(metadata_name).decode()
        assert f"\nVersion: {VERSION}\n" in metadata
        package = ROOT / "datasette_laion"
        for pattern in ("*.py", "templates/*.html", "static/*", "data/*.csv"):
            for path in sorted(package.glob(pattern)):
                name = path.relative_to(package).as_posix()
                assert zf.read(f"datasette_laion/{name}") == path.read_bytes(), name
        assert json.loads(zf.read("datasette_laion/settings.json")) == site.settings()
    # the same dependency versions as here
    constraints = (dry_run / "constraints.txt").read_text().splitlines()
    from importlib.metadata import version

    assert f"datasette=={version('datasette')}" in constraints
    assert not any(line.lower().startswith(("datasette-laion", "datasette_laion")) for line in constraints)
    # /-/versions.json tells which wheel is running
    argv = dockerfile_cmd(dry_run)
    assert argv[argv.index("--version-note") + 1] == f"datasette-laion {VERSION}, wheel sha256 {sha256(wheel)[:12]}"


def test_no_secret_in_any_file(dry_run):
    for path in dry_run.rglob("*"):
        if path.is_file() and path.suffix != ".whl":
            assert not SECRET_RE.search(path.read_bytes()), path
    envs = [line for line in (dry_run / "Dockerfile").read_text().splitlines() if line.startswith("ENV ")]
    assert envs == ["ENV PORT 8080"]


def test_project_fly_toml_is_deployed(dry_run):
    project = (ROOT / "fly.toml").read_text().splitlines()
    deployed = (dry_run / "fly.toml").read_text().splitlines()
    assert len(project) == len(deployed)
    changed = {(a, b) for a, b in zip(project, deployed) if a != b}
    assert {b.split("#")[0].strip() for a, b in changed} == {
        'app = "laion-test"', 'primary_region = "ams"', 'source = "laion_test"', 'initial_size = "20gb"',
    }
    config = toml(dry_run / "fly.toml")
    assert config["build"]["dockerfile"] == "Dockerfile"


@pytest.mark.parametrize("args,message", [
    (["--app", "Bad_Name"], "error: --app: 'Bad_Name' is not a Fly app name (lowercase letters, digits and -)\n"),
    (["--region", "europe"], "error: --region: 'europe' is not a Fly region code (e.g. sjc, iad, ams)\n"),
    (["--volume", "laion-data"], "error: --volume: 'laion-data' is not a Fly volume name (lowercase letters, digits and _, at most 30)\n"),
    (["--volume-size", "0"], "error: --volume-size: '0' is not a whole number of GB\n"),
    (["--dry-run"], "error: --dry-run needs a value\n"),
    (["--verbose"], "error: unknown argument: --verbose\n"),
])
def test_deploy_usage_errors(args, message):
    result = run("deploy.sh", *args)
    assert result.returncode == 2
    assert result.stderr == message + "usage: scripts/deploy.sh [--app NAME] [--region CODE] [--org ORG] [--volume NAME] [--volume-size GB] [--dry-run OUTDIR]\n"


@pytest.mark.parametrize("script", ["deploy.sh", "upload.sh", "fetch-data.sh"])
def test_scripts_have_a_usage_line_and_strict_mode(script):
    text = (SCRIPTS / script).read_text()
    assert text.splitlines()[1].startswith(f"# usage: scripts/{script} ")
    assert "\nset -euo pipefail\n" in text
    result = run(script, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: scripts/{script} ")


# -- the generated command, run here with a temporary /data -----------------

@pytest.fixture(scope="session")
def wheel_site_packages(wheel, tmp_path_factory):
    """The shipped wheel installed (without its dependencies, which this venv
    has) into a directory of its own; the server runs with it first on
    sys.path, so the plugin code it runs is the wheel's."""
    target = tmp_path_factory.mktemp("wheel-install")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        check=True, timeout=120,
    )
    return target


def start_deployed_server(dry_run, wheel_site_packages, data_dir, workdir):
    """What the image does, here: the Dockerfile's `datasette inspect` step,
    then its CMD, with data_dir standing in for /data and this venv's Python
    for the image's."""
    app = workdir / "app"
    shutil.copytree(dry_run, app)  # COPY . /app; WORKDIR /app
    metadata = (app / "metadata.json").read_text()
    (app / "metadata.json").write_text(metadata.replace('"/data/', f'"{data_dir}/'))
    env = {**os.environ, "PYTHONPATH": str(wheel_site_packages), "DATASETTE_SECRET": "test-secret"}
    datasette = [sys.executable, "-m", "datasette"]
    lines = (app / "Dockerfile").read_text().splitlines()
    [inspect] = [line for line in lines if line.startswith("RUN datasette inspect")]
    subprocess.run(datasette + shlex.split(inspect)[2:], cwd=app, env=env, check=True, timeout=60)
    port = free_port()
    argv = dockerfile_cmd(app)
    assert argv[:2] == ["exec", "datasette"]
    argv = datasette + [{"$PORT": str(port), "0.0.0.0": "127.0.0.1"}.get(a, a) for a in argv[2:]]
    log = workdir / "server.log"
    with open(log, "w") as out:  # the server keeps its own copy of the descriptor
        process = subprocess.Popen(argv, cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/-/laion/health", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("server did not start:\n" + log.read_text())
            time.sleep(0.1)
    return process, base


@pytest.fixture
def deployed_server(dry_run, wheel_site_packages, tmp_path):
    processes = []

    def start(data_dir):
        process, base = start_deployed_server(dry_run, wheel_site_packages, data_dir, tmp_path)
        processes.append(process)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_wheel_code_is_what_runs(wheel_site_packages, tmp_path):
    """With the server's environment (and cwd outside the checkout, as /app
    is), the plugin is imported from the wheel, not from this working tree."""
    out = subprocess.run(
        [sys.executable, "-c", "import datasette_laion; print(datasette_laion.__file__)"],
        env={**os.environ, "PYTHONPATH": str(wheel_site_packages)}, capture_output=True, text=True, check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert out == str(wheel_site_packages / "datasette_laion" / "__init__.py")


def test_deployed_server_serves_the_uploaded_database(deployed_server, built, tmp_path, wheel):
    data = tmp_path / "data"
    (data / "laion").mkdir(parents=True)
    os.link(built.path, data / "laion" / f"{DB_NAME}.db") if built.path.stat().st_dev == tmp_path.stat().st_dev \
        else shutil.copy(built.path, data / "laion" / f"{DB_NAME}.db")
    inspect = json.loads(built.inspect_path.read_text())
    inspect[DB_NAME]["tables"]["images"]["count"] = 424242  # not the real count: must be shown as is
    (data / "laion" / "inspect.json").write_text(json.dumps(inspect))
    base = deployed_server(data)

    health = httpx.get(base + "/-/laion/health")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    databases = [d for d in httpx.get(base + "/-/databases.json").json() if not d["is_memory"]]
    assert [(d["name"], d["is_mutable"], d["path"]) for d in databases] == [
        (DB_NAME, False, str(data / "laion" / f"{DB_NAME}.db"))
    ]
    tables = {t["name"]: t["count"] for t in httpx.get(f"{base}/{DB_NAME}.json").json()["tables"]}
    assert tables["images"] == 424242
    page = httpx.get(f"{base}/{DB_NAME}/images.json?_size=1").json()
    assert page["filtered_table_rows_count"] == 424242
    rows = httpx.get(f"{base}/{DB_NAME}/images.json?_search=dog&_shape=array").json()
    assert rows and all("dog" in row["text"].lower() for row in rows)
    settings = httpx.get(base + "/-/settings.json").json()
    assert {key: settings[key] for key in site.settings()} == site.settings()
    versions = httpx.get(base + "/-/versions.json").json()
    assert versions["datasette"]["note"] == f"datasette-laion {VERSION}, wheel sha256 {sha256(wheel)[:12]}"


def test_deployed_server_starts_on_an_empty_volume(deployed_server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    base = deployed_server(data)
    health = httpx.get(base + "/-/laion/health")
    assert health.status_code == 200
    assert health.json()["status"] == "not uploaded"
    assert "The database has not been uploaded yet" in httpx.get(base + "/").text
    assert DB_NAME not in [d["name"] for d in httpx.get(base + "/-/databases.json").json()]


# -- deploy.sh and upload.sh against the fake flyctl ------------------------

class FakeFly:
    def __init__(self, tmp_path):
        self.state_dir = tmp_path / "fly"
        self.state_dir.mkdir()
        self.env = {"PATH": FAKE_PATH, "FAKE_FLY_STATE": str(self.state_dir),
                    "UPLOAD_HEALTH_TRIES": "1"}

    def calls(self):
        path = self.state_dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def argvs(self):
        return [call["argv"] for call in self.calls()]

    @property
    def state(self):
        return json.loads((self.state_dir / "state.json").read_text())

    def set_state(self, **state):
        base = {"apps": [], "volumes": [], "secrets": {}, "machines": [], "restarts": []}
        (self.state_dir / "state.json").write_text(json.dumps({**base, **state}))

    def volume(self, machine):
        return self.state_dir / "volumes" / machine


@pytest.fixture
def fly(tmp_path):
    return FakeFly(tmp_path)


def test_deploy_creates_app_volume_secret_then_deploys(fly, dry_run):
    result = run("deploy.sh", "--app", "laion-test", "--region", "ams", env=fly.env)
    assert result.returncode == 0, result.stderr
    calls = fly.calls()
    deploy_dir = calls[-1]["argv"][1]
    assert [c["argv"] for c in calls] == [
        ["auth", "whoami"],
        ["status", "--app", "laion-test", "--json"],
        ["apps", "create", "laion-test", "--org", "personal"],
        ["volumes", "list", "--app", "laion-test", "--json"],
        ["volumes", "create", "laion_data", "--app", "laion-test", "--region", "ams", "--size", "12", "--yes"],
        ["secrets", "list", "--app", "laion-test", "--json"],
        ["secrets", "import", "--app", "laion-test", "--stage"],
        ["deploy", deploy_dir, "--app", "laion-test", "--config", f"{deploy_dir}/fly.toml", "--remote-only", "--ha=false"],
    ]
    assert calls[6]["stdin_names"] == ["DATASETTE_SECRET"]
    secret = fly.state["secrets"]["laion-test"]["DATASETTE_SECRET"]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    # what was deployed: the project's fly.toml, and the secret in no file
    deployed = fly.state_dir / "deployed"
    assert sorted(p.name for p in deployed.iterdir()) == ["Dockerfile", "constraints.txt", "fly.toml", "metadata.json", "wheels"]
    expected = re.sub(r'^app = "[^"]*"', 'app = "laion-test"', (ROOT / "fly.toml").read_text(), flags=re.MULTILINE)
    expected = re.sub(r'^primary_region = "[^"]*"', 'primary_region = "ams"', expected, flags=re.MULTILINE)
    assert (deployed / "fly.toml").read_text() == expected
    for path in deployed.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes() and b"DATASETTE_SECRET" not in path.read_bytes(), path
    assert not Path(deploy_dir).exists(), "the temporary deployment directory is left behind"
    # the same deployment as --dry-run writes (but for the wheel's build time)
    dry_run_dockerfile = (dry_run / "Dockerfile").read_text()
    assert re.sub(r"sha256 [0-9a-f]{12}", "", (deployed / "Dockerfile").read_text()) == re.sub(
        r"sha256 [0-9a-f]{12}", "", dry_run_dockerfile)
    assert (deployed / "metadata.json").read_text() == (dry_run / "metadata.json").read_text()

    # Deploying again changes nothing but the code: same app, volume and secret.
    result = run("deploy.sh", "--app", "laion-test", "--region", "ams", env=fly.env)
    assert result.returncode == 0, result.stderr
    again = [argv[:2] for argv in fly.argvs()[len(calls):]]
    assert again == [["auth", "whoami"], ["status", "--app"], ["volumes", "list"], ["secrets", "list"], ["deploy", again[-1][1]]]
    assert fly.state["secrets"]["laion-test"]["DATASETTE_SECRET"] == secret


def test_plain_publish_fly_is_why_deploy_sh_does_not_use_it(fly):
    """What `datasette publish fly` (1.4) does on its own, against the same
    fake: the calls it makes, and the defects of what it deploys."""
    result = subprocess.run(
        [sys.executable, "-m", "datasette", "publish", "fly", "--app", "laion-test", "--region", "ams",
         "--extra-options", "--cors", "--setting", "sql_time_limit_ms", "1500"],
        capture_output=True, text=True, env={**os.environ, **fly.env}, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    argvs = fly.argvs()
    assert [argv[:2] for argv in argvs] == [
        ["auth", "token"], ["status", "--app"], ["apps", "create"], ["volumes", "list"], ["deploy", "."],
    ]
    assert argvs[-1] == ["deploy", ".", "--app", "laion-test", "--config", "fly.toml", "--remote-only"]
    deployed = fly.state_dir / "deployed"
    dockerfile = (deployed / "Dockerfile").read_text()
    assert "ENV DATASETTE_SECRET '" in dockerfile  # the secret, in the image
    assert "--cors--setting" in dockerfile  # a setting glued to --extra-options
    toml = (deployed / "fly.toml").read_text()
    assert "[[services.tcp_checks]]" in toml and "http_service" not in toml  # the old format, a TCP check


def test_deploy_needs_a_login(fly):
    result = run("deploy.sh", env={**fly.env, "FAKE_FLY_LOGGED_OUT": "1"})
    assert result.returncode == 1
    assert result.stderr == "error: not logged in to Fly: run 'flyctl auth login' first\n"
    assert fly.argvs() == [["auth", "whoami"]]


APP = "laion-test"
MACHINE = "m10a1b2c3"


def one_machine(fly, *machines):
    machines = machines or (MACHINE,)
    fly.set_state(
        apps=[APP],
        volumes=[{"id": f"vol_{i}", "name": "laion_data", "app": APP, "region": "ams", "size_gb": 12} for i, _ in enumerate(machines)],
        machines=[{"id": m, "app": APP, "region": "ams", "volume": f"vol_{i}"} for i, m in enumerate(machines)],
    )


class _UploadInspect(str):
    """Equal to the path of the inspect file upload.sh writes for the upload."""

    def __eq__(self, other):
        return isinstance(other, str) and other.startswith(("/tmp/upload.", os.environ.get("TMPDIR", "/tmp"))) \
            and other.endswith("/inspect.json")

    __hash__ = str.__hash__


ANY_UPLOAD_INSPECT = _UploadInspect("<upload.sh's inspect.json>")


def test_upload_sends_the_entry_of_a_database_built_under_another_name(fly, built, tmp_path):
    """pd12m.db, or several databases built into one folder: the entry whose
    hash is this file's goes up, keyed by the served name."""
    one_machine(fly)
    db = tmp_path / "pd12m.db"
    shutil.copy(built.path, db)
    entry = json.loads(built.inspect_path.read_text())[DB_NAME]
    inspect = tmp_path / "inspect.json"
    inspect.write_text(json.dumps({"other": {**entry, "hash": "f" * 64}, "pd12m": entry}))
    result = run("upload.sh", db, inspect, "--app", APP, env=fly.env)
    assert result.returncode == 0, result.stderr
    volume = fly.volume(MACHINE) / "laion"
    assert sha256(volume / f"{DB_NAME}.db") == sha256(built.path)
    assert json.loads((volume / "inspect.json").read_text()) == {DB_NAME: entry}


def upload_calls(machine, vectors=None):
    """The calls of an upload to machine; vectors: the local vectors file
    carried, or None (then the served one is removed in the switch)."""
    def ssh(command):
        return ["ssh", "console", "--app", APP, "--machine", machine, "--quiet", "-C", command]

    db, inspect = f"/data/laion/{DB_NAME}.db", "/data/laion/inspect.json"
    vec = f"/data/laion/{DB_NAME}.vectors"
    uploading = f"{db}.uploading {inspect}.uploading" + (f" {vec}.uploading" if vectors else "")
    # vectors (or its removal) first, the database last: see upload.sh
    first = f"mv -f {vec}.uploading {vec}" if vectors else f"rm -f {vec}"
    return {
        "prepare": [
            ssh("mkdir -p /data/laion"),
            ssh(f"rm -f {db}.uploading {inspect}.uploading {vec}.uploading"),  # leftovers, always all three
            ssh("df -Pk /data/laion"),
        ],
        "put": lambda local_db: [
            ["ssh", "sftp", "put", str(local_db), f"{db}.uploading", "--app", APP, "--machine", machine],
            # the inspect entry of this file alone, keyed by the served name: a file of upload.sh's own
            ["ssh", "sftp", "put", ANY_UPLOAD_INSPECT, f"{inspect}.uploading", "--app", APP, "--machine", machine],
        ] + ([["ssh", "sftp", "put", str(vectors), f"{vec}.uploading", "--app", APP, "--machine", machine]]
             if vectors else []),
        "check": [ssh(f"sha256sum {uploading}")],
        "switch": [
            ssh(f"sh -c '{first} && mv -f {inspect}.uploading {inspect} && mv -f {db}.uploading {db}'"),
            ["machine", "restart", machine, "--app", APP],
        ],
    }


def test_upload_puts_checks_moves_restarts(fly, built):
    one_machine(fly)
    result = run("upload.sh", built.path, built.inspect_path, "--app", APP, env=fly.env)
    assert result.returncode == 0, result.stderr
    c = upload_calls(MACHINE)
    argvs = fly.argvs()
    assert argvs[:-1] == (
        [["ssh", "sftp", "put", "--help"], ["machine", "list", "--app", APP, "--json"]]
        + c["prepare"] + c["put"](built.path) + c["check"] + c["switch"]
    )
    assert "/-/laion/health" in argvs[-1][-1]  # it serves the new database after the restart
    volume = fly.volume(MACHINE) / "laion"
    assert sorted(p.name for p in volume.iterdir()) == sorted([f"{DB_NAME}.db", "inspect.json"])
    assert sha256(volume / f"{DB_NAME}.db") == sha256(built.path)
    entry = json.loads(built.inspect_path.read_text())[DB_NAME]
    assert json.loads((volume / "inspect.json").read_text()) == {DB_NAME: entry}
    assert fly.state["restarts"] == [MACHINE]
    assert result.stderr.endswith(f"Uploaded {built.path} (sha256 {sha256(built.path)}) to 1 machine(s) of {APP}.\n")


def test_upload_refuses_a_corrupt_copy_and_keeps_serving_the_old_one(fly, built):
    one_machine(fly)
    served = fly.volume(MACHINE) / "laion"
    served.mkdir(parents=True)
    (served / f"{DB_NAME}.db").write_bytes(b"SQLite format 3\x00 the previous database")
    (served / "inspect.json").write_text("{}")
    result = run("upload.sh", built.path, built.inspect_path, "--app", APP, env={**fly.env, "FAKE_FLY_SHA256": "wrong"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: {MACHINE}: sha256 of /data/laion/{DB_NAME}.db.uploading is {'0' * 64}, expected {sha256(built.path)}: "
        "the upload is corrupt. Nothing was moved; the site serves the previous database. Run this again."
    )
    assert (served / f"{DB_NAME}.db").read_bytes() == b"SQLite format 3\x00 the previous database"
    assert (served / "inspect.json").read_text() == "{}"
    assert sorted(p.name for p in served.iterdir()) == sorted([f"{DB_NAME}.db", "inspect.json"])  # temporaries removed
    argvs = fly.argvs()
    assert not any("mv" in argv[-1] for argv in argvs if argv[:2] == ["ssh", "console"])
    assert not any(argv[:2] == ["machine", "restart"] for argv in argvs)


def test_upload_to_several_machines_switches_only_when_all_have_it(fly, built):
    machines = ("m10a1b2c3", "m20d4e5f6")
    one_machine(fly, *machines)
    result = run("upload.sh", built.path, built.inspect_path, "--app", APP, env=fly.env)
    assert result.returncode == 0, result.stderr
    argvs = [argv for argv in fly.argvs() if "/-/laion/health" not in argv[-1]]
    first, second = (upload_calls(m) for m in machines)
    assert argvs == (
        [["ssh", "sftp", "put", "--help"], ["machine", "list", "--app", APP, "--json"]]
        + first["prepare"] + first["put"](built.path) + first["check"]
        + second["prepare"] + second["put"](built.path) + second["check"]
        + first["switch"] + second["switch"]
    )
    for machine in machines:
        assert sha256(fly.volume(machine) / "laion" / f"{DB_NAME}.db") == sha256(built.path)


def test_upload_removes_leftovers_of_an_interrupted_upload(fly, built):
    one_machine(fly)
    leftovers = fly.volume(MACHINE) / "laion"
    leftovers.mkdir(parents=True)
    (leftovers / f"{DB_NAME}.db.uploading").write_bytes(b"half a database")
    (leftovers / f"{DB_NAME}.vectors.uploading").write_bytes(b"LAIONVEC half a vectors file")
    result = run("upload.sh", built.path, built.inspect_path, "--app", APP, env=fly.env)
    assert result.returncode == 0, result.stderr
    assert sha256(leftovers / f"{DB_NAME}.db") == sha256(built.path)
    assert sorted(p.name for p in leftovers.iterdir()) == sorted([f"{DB_NAME}.db", "inspect.json"])


# -- the similar-images vectors file (NAME.vectors beside NAME.db) -----------

VECTORS_BYTES = b"LAIONVEC" + bytes(range(256)) * 4  # the magic; upload.sh reads no further


@pytest.fixture
def build_dir(built, tmp_path):
    """A copy of the built database and its inspect file in a folder of its
    own, as `datasette laion build` leaves them, with NAME.vectors beside."""
    directory = tmp_path / "build"
    directory.mkdir()
    db = directory / f"{DB_NAME}.db"
    shutil.copy(built.path, db)
    shutil.copy(built.inspect_path, directory / "inspect.json")
    (directory / f"{DB_NAME}.vectors").write_bytes(VECTORS_BYTES)
    return directory


def serve_previous(fly, machine=MACHINE):
    """The volume of machine as a previous upload left it, vectors file too."""
    served = fly.volume(machine) / "laion"
    served.mkdir(parents=True)
    (served / f"{DB_NAME}.db").write_bytes(b"SQLite format 3\x00 the previous database")
    (served / "inspect.json").write_text("{}")
    (served / f"{DB_NAME}.vectors").write_bytes(b"LAIONVEC the previous vectors")
    return served


def test_upload_carries_the_vectors_file_beside_the_database(fly, build_dir):
    one_machine(fly)
    serve_previous(fly)
    db, vectors = build_dir / f"{DB_NAME}.db", build_dir / f"{DB_NAME}.vectors"
    result = run("upload.sh", db, build_dir / "inspect.json", "--app", APP, env=fly.env)
    assert result.returncode == 0, result.stderr
    assert f"==> carrying {vectors} too, the vectors file beside {db} (--no-vectors to leave it out)\n" in result.stderr
    c = upload_calls(MACHINE, vectors=vectors)
    argvs = fly.argvs()
    assert argvs[:-1] == (
        [["ssh", "sftp", "put", "--help"], ["machine", "list", "--app", APP, "--json"]]
        + c["prepare"] + c["put"](db) + c["check"] + c["switch"]
    )
    # one sha256sum for the three files, one command for the three renames, vectors first and the database last
    [check] = [argv[-1] for argv in argvs if argv[-1].startswith("sha256sum ")]
    assert len(check.split()) == 4 and check.split()[-1] == f"/data/laion/{DB_NAME}.vectors.uploading"
    [switch] = [argv[-1] for argv in argvs if argv[-1].startswith("sh -c ")]
    assert switch.count("mv -f ") == 3 and "rm " not in switch
    assert switch.index(".vectors.uploading") < switch.index("inspect.json.uploading") < switch.index(".db.uploading")
    served = fly.volume(MACHINE) / "laion"
    assert sorted(p.name for p in served.iterdir()) == sorted([f"{DB_NAME}.db", "inspect.json", f"{DB_NAME}.vectors"])
    assert (served / f"{DB_NAME}.vectors").read_bytes() == VECTORS_BYTES
    assert sha256(served / f"{DB_NAME}.db") == sha256(db)
    assert fly.state["restarts"] == [MACHINE]
    assert result.stderr.endswith(
        f"Uploaded {db} (sha256 {sha256(db)}) with {vectors} (sha256 {sha256(vectors)}) to 1 machine(s) of {APP}.\n")


def test_upload_without_vectors_removes_the_served_one(fly, build_dir):
    one_machine(fly)
    served = serve_previous(fly)
    db = build_dir / f"{DB_NAME}.db"
    result = run("upload.sh", db, build_dir / "inspect.json", "--no-vectors", "--app", APP, env=fly.env)
    assert result.returncode == 0, result.stderr
    assert "==> no vectors file carried (--no-vectors): a served one, the previous database's, is removed\n" in result.stderr
    c = upload_calls(MACHINE)
    assert fly.argvs()[:-1] == (
        [["ssh", "sftp", "put", "--help"], ["machine", "list", "--app", APP, "--json"]]
        + c["prepare"] + c["put"](db) + c["check"] + c["switch"]
    )
    assert sorted(p.name for p in served.iterdir()) == sorted([f"{DB_NAME}.db", "inspect.json"])
    assert sha256(served / f"{DB_NAME}.db") == sha256(db)
    assert result.stderr.endswith(f"Uploaded {db} (sha256 {sha256(db)}) to 1 machine(s) of {APP}.\n")


def test_upload_refuses_a_corrupt_vectors_file_and_moves_nothing(fly, build_dir, tmp_path):
    """The database and inspect file arrive intact, the vectors file (named by
    --vectors) does not: nothing is moved, nothing removed, no restart."""
    one_machine(fly)
    served = serve_previous(fly)
    vectors = tmp_path / "elsewhere.vectors"
    vectors.write_bytes(VECTORS_BYTES)
    # A flyctl whose sftp put of the vectors file flips its last byte on the machine
    # (FAKE_FLY_SHA256=wrong would fail the database's digest first).
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    (wrapper / "flyctl").write_text(f"""#!/bin/sh
"{FAKES / 'flyctl'}" "$@" || exit $?
case "$*" in
    "ssh sftp put "*.vectors.uploading*)
        for f in "$FAKE_FLY_STATE"/volumes/*/laion/*.vectors.uploading; do
            python3 -c 'import sys; p = sys.argv[1]; b = open(p, "rb").read(); open(p, "wb").write(b[:-1] + bytes([b[-1] ^ 1]))' "$f"
        done ;;
esac
""")
    (wrapper / "flyctl").chmod(0o755)
    env = {**fly.env, "PATH": f"{wrapper}{os.pathsep}{FAKE_PATH}"}
    result = run("upload.sh", build_dir / f"{DB_NAME}.db", build_dir / "inspect.json", "--vectors", vectors,
                 "--app", APP, env=env)
    assert result.returncode == 1
    corrupt = hashlib.sha256(VECTORS_BYTES[:-1] + bytes([VECTORS_BYTES[-1] ^ 1])).hexdigest()
    assert result.stderr.splitlines()[-1] == (
        f"error: {MACHINE}: sha256 of /data/laion/{DB_NAME}.vectors.uploading is {corrupt}, expected {sha256(vectors)}: "
        "the upload is corrupt. Nothing was moved; the site serves the previous database. Run this again."
    )
    argvs = fly.argvs()
    assert ["ssh", "sftp", "put", str(vectors), f"/data/laion/{DB_NAME}.vectors.uploading", "--app", APP,
            "--machine", MACHINE] in argvs
    assert not any(re.search(r"\b(mv|sh -c)\b", argv[-1]) for argv in argvs if argv[:2] == ["ssh", "console"])
    assert not any(argv[:2] == ["machine", "restart"] for argv in argvs)
    assert (served / f"{DB_NAME}.db").read_bytes() == b"SQLite format 3\x00 the previous database"
    assert (served / "inspect.json").read_text() == "{}"
    assert (served / f"{DB_NAME}.vectors").read_bytes() == b"LAIONVEC the previous vectors"
    assert sorted(p.name for p in served.iterdir()) == sorted([f"{DB_NAME}.db", "inspect.json", f"{DB_NAME}.vectors"])


def test_upload_needs_a_flyctl_with_sftp_put(fly, built):
    one_machine(fly)
    result = run("upload.sh", built.path, built.inspect_path, "--app", APP, env={**fly.env, "FAKE_FLY_OLD": "1"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: this flyctl has no 'ssh sftp put' (only recent versions have it): run 'flyctl version upgrade'"
    assert fly.argvs() == [["ssh", "sftp", "put", "--help"]]


def test_upload_needs_a_machine(fly, built):
    fly.set_state(apps=[APP])
    result = run("upload.sh", built.path, built.inspect_path, "--app", APP, env=fly.env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"error: app {APP} has no machines: deploy it first (scripts/deploy.sh --app {APP})"


@pytest.mark.parametrize("case,code,message", [
    ("missing db", 1, "error: {db}: no such file"),
    ("not sqlite", 1, "error: {db} is not an SQLite database"),
    ("other key", 1, ("error: {inspect} has no entry for database 'laion-aesthetic-6pls' nor for the file {db} "
                      "(it has: other); give the inspect file that `datasette laion build` wrote beside it")),
    ("other file", 1, ("error: {inspect} was written for another database file than {db} "
                       "(its hash/size: {bad}/{size}, the file's: {sha}/{size})")),
    ("one argument", 2, "error: expected DB and INSPECT, got 1 argument(s)"),
    ("missing vectors", 1, "error: {vectors}: no such file"),
    ("not vectors", 1, "error: {vectors} is not a vectors file written by datasette laion build"),
    ("short vectors", 1, "error: {vectors} is not a vectors file written by datasette laion build"),
    ("vectors and none", 2, "error: --vectors and --no-vectors exclude each other"),
])
def test_upload_checks_its_files_before_calling_fly(fly, built, tmp_path, case, code, message):
    db, inspect = tmp_path / "laion.db", tmp_path / "inspect.json"
    vectors = tmp_path / "laion.vectors"  # beside laion.db: carried unless --no-vectors
    shutil.copy(built.path, db)
    data = json.loads(built.inspect_path.read_text())
    bad = "f" * 64
    if case == "missing db":
        db.unlink()
    elif case == "not sqlite":
        db.write_bytes(b"not a database")
    elif case == "other key":
        data = {"other": {**data[DB_NAME], "hash": bad}}
    elif case == "other file":
        data[DB_NAME]["hash"] = bad
    elif case == "missing vectors":
        vectors = tmp_path / "named.vectors"
    elif case == "not vectors":
        vectors.write_bytes(b"\x00\x93NUMPY" + bytes(100))  # found beside the database, so checked
    elif case == "short vectors":
        vectors.write_bytes(b"LAIONVE")
    inspect.write_text(json.dumps(data))
    args = [db] if case == "one argument" else [db, inspect]
    if case == "missing vectors":
        args += ["--vectors", vectors]
    elif case == "vectors and none":
        args += ["--vectors", vectors, "--no-vectors"]
    result = run("upload.sh", *args, "--app", APP, env=fly.env)
    assert result.returncode == code
    expected = message.format(db=db, inspect=inspect, vectors=vectors, bad=bad, size=built.path.stat().st_size,
                              sha=sha256(built.path))
    assert result.stderr.splitlines()[-1 if code == 1 else -2] == expected
    assert fly.calls() == []

