"""`datasette laion serve`: worker processes, as deployed (serving.py)."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from datasette.cli import cli as datasette_cli

from datasette_laion import serving, site

DB = "laion-aesthetic-6pls"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def invoke(*args):
    return CliRunner().invoke(datasette_cli, ["laion", *map(str, args)], catch_exceptions=False)


# -- worker processes --------------------------------------------------------


def children(pid):
    """{pid: command line} of the processes whose parent is ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def holds_open(pid, path):
    """True when ``pid`` has ``path`` open."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(*args, env=None):
        port = free_port()
        log = open(tmp_path / f"server-{port}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "datasette_laion", "serve", *map(str, args), "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/-/laion/health", timeout=2).json()["status"] == "ready":
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert process.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        return process, base

    yield start
    for process in started:  # the supervisor and its workers: a process group of their own
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_workers_share_the_port_and_stop_cleanly(start_server, built, stop):
    process, base = start_server(built.path, "--workers", "2")
    kids = children(process.pid)
    workers = [pid for pid, cmd in kids.items() if "spawn_main" in cmd]
    assert len(workers) == 2, kids
    assert "uvicorn" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()  # the supervisor
    # each worker ran the startup and `datasette serve`'s database checks: it
    # holds the database open (as Datasette opens it: immutable, see below)
    wait_for(lambda: all(holds_open(pid, built.path.resolve()) for pid in workers))
    assert [(d["name"], d["is_mutable"]) for d in httpx.get(base + "/-/databases.json").json()] == [(DB, False)]
    assert httpx.get(f"{base}/{DB}/images.json?_search=dog&_shape=array").json()
    process.send_signal(stop)
    assert process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in kids if alive(pid)], "orphans left behind"
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/-/laion/health", timeout=2)


def test_workers_stop_when_the_supervisor_is_killed(start_server, built):
    """SIGKILL to the supervisor (an OOM kill, a hard stop): the kernel tells
    the workers, which stop; none is left serving the port on its own."""
    process, base = start_server(built.path, "--workers", "2")
    workers = [pid for pid, cmd in children(process.pid).items() if "spawn_main" in cmd]
    assert len(workers) == 2
    process.kill()
    process.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), seconds=15)
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/-/laion/health", timeout=2)


def test_workers_share_one_signing_secret(start_server, built):
    """A CSRF token (or signed cookie) from any worker is good in every one:
    the secret is generated once and handed to all, in their environment."""
    process, base = start_server(built.path, "--workers", "2", env={"DATASETTE_SECRET": ""})
    workers = [pid for pid, cmd in children(process.pid).items() if "spawn_main" in cmd]
    secrets = {
        next(v for k, _, v in (e.partition(b"=") for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
             if k == b"DATASETTE_SECRET")
        for pid in workers
    }
    assert len(secrets) == 1 and len(secrets.pop()) == 64
    for _ in range(12):  # new connections: the kernel hands them to either worker
        with httpx.Client(base_url=base) as client:
            page = client.get("/-/messages")
            token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
        with httpx.Client(base_url=base, cookies={"ds_csrftoken": page.cookies["ds_csrftoken"]}) as client:
            posted = client.post("/-/messages", data={"csrftoken": token, "message": "hi", "message_type": "INFO"})
        assert posted.status_code == 302, posted.text


def test_default_workers():
    assert 1 <= serving.default_workers() <= serving.MAX_DEFAULT_WORKERS


def test_serve_help():
    result = invoke("serve", "--help")
    assert result.exit_code == 0
    assert "--workers INTEGER RANGE" in result.output
    assert "--access-log / --no-access-log" in result.output and "[default: no-access-log]" in result.output
    assert "laion serve [OPTIONS] [DB]... [SERVE_OPTIONS]..." in result.output


def test_one_process_options_go_to_datasette_serve(built):
    result = invoke("serve", built.path, "--get", "/-/laion/health")
    assert result.exit_code == 0 and json.loads(result.output)["status"] == "ready"
    result = invoke("serve", built.path, "--workers", "2", "--get", "/")
    assert result.exit_code == 2
    assert result.output.endswith("Error: --get runs in one process: use --workers 1 with it\n")


def test_serve_usage_errors(tmp_path):
    result = invoke("serve")
    assert result.exit_code == 2
    assert "Error: Missing argument 'DB' (or a --metadata file whose datasette-laion plugin configuration has a " \
           "database_path)." in result.output
    result = invoke("serve", tmp_path / "missing.db")
    assert result.exit_code == 2 and f"Error: Invalid value for 'DB': File '{tmp_path / 'missing.db'}' does not exist." \
        in result.output


def test_bad_plugin_config_stops_before_anything_listens(built, tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"plugins": {"datasette-laion": {"safe_mode_threshold": 7}}}))
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "datasette_laion", "serve", str(built.path), "-m", str(metadata), "-p", str(port),
         "--workers", "2"], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.endswith("Error: datasette-laion: safe_mode_threshold must be a number from 0 to 1, not 7\n")


async def lifespan(app, messages):
    """Sends ``messages`` to ``app``'s lifespan; returns what it answered."""
    queue = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    sent = []

    async def send(message):
        sent.append(message["type"])

    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send), 30)
    return sent


@pytest.mark.asyncio
async def test_worker_app_starts_datasette_before_serving(built, monkeypatch):
    args = ["-i", str(built.path), "-m", str(site.METADATA_PATH), "--inspect-file", str(built.inspect_path),
            *site.setting_args()]
    monkeypatch.setenv(serving.ENV_OPTIONS, json.dumps({"args": args}))
    app = serving.worker_app()
    assert app.datasette.databases[DB].is_mutable is False
    sent = await lifespan(app, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.datasette._startup_invoked and app.datasette.jinja_env.auto_reload is False
    response = await app.datasette.client.get("/-/laion/health")
    assert response.json()["status"] == "ready"


@pytest.mark.asyncio
async def test_worker_app_reports_a_failed_startup():
    from datasette.app import Datasette

    ds = Datasette(metadata={"plugins": {"datasette-laion": {"safe_mode_threshold": 7}}})
    app = serving.WorkerApp(ds)
    sent = await lifespan(app, [{"type": "lifespan.startup"}])
    assert sent == ["lifespan.startup.failed"]
    assert app.app is None
