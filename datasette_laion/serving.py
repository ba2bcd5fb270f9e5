"""Run the site as `datasette serve` would, in one process or several.

`datasette serve` answers every request on one Python thread: under load the
site is bound by that one CPU core (routing, permission checks, Jinja) long
before SQLite is. ``run()`` starts N uvicorn worker processes sharing one
listening socket (uvicorn's own ``workers=``), each with a Datasette of its
own built from the same `datasette serve` options, exactly as `datasette
serve` builds it:

1. the options are parsed by `datasette serve`'s own command, which builds
   the Datasette instance (``return_instance``): same files opened the same
   way (``-i``: immutable), same inspect data, metadata, settings, secret;
2. the startup hooks run (``invoke_startup``: the plugin opens a configured
   ``database_path`` immutable), then `datasette serve`'s database checks;
3. only then is the ASGI app made (``ds.app()``) and served.

The command does all three once itself first (so that a bad option or
configuration is one clear error before anything listens, not N crashing
workers), then becomes uvicorn's supervisor (``exec python -m uvicorn
--factory --workers N``: same process id, so it still gets the signals, and
~25 MB instead of a whole Datasette it would never use). The supervisor binds
the port, starts the workers, restarts one that dies, and on SIGTERM or SIGINT
stops them all (each finishing its requests) and exits. The workers get the
`datasette serve` options in an environment variable, as JSON, and share one
signing secret (``DATASETTE_SECRET``; generated once here when none is
given), so that a cookie or CSRF token signed by one is good in all. A worker
whose supervisor dies, even by SIGKILL, is sent SIGTERM by the kernel
(``die_with_parent``): none is left holding the port.

Options that only make sense in one process (``--reload``, ``--get``,
``--root``, ``--open``, ``--pdb``, ``--uds``, ``--ssl-*``, ``--help-settings``)
go to `datasette serve` itself, unchanged.
"""
import ctypes
import ctypes.util
import json
import os
import secrets
import signal
import sys

import click

from . import compat
from .config import ConfigError

ENV_OPTIONS = "DATASETTE_LAION_SERVE"  # JSON: {"args": [datasette serve arguments]}
MAX_DEFAULT_WORKERS = 4
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# `datasette serve` options (click parameter names) handled by `datasette serve` itself.
ONE_PROCESS_OPTIONS = {
    "reload": "--reload", "get": "--get", "root": "--root", "open_browser": "--open", "pdb": "--pdb",
    "help_settings": "--help-settings", "uds": "--uds", "ssl_keyfile": "--ssl-keyfile",
    "ssl_certfile": "--ssl-certfile",
}


def default_workers():
    """One worker per CPU core this process may run on, at most
    MAX_DEFAULT_WORKERS (each costs ~130 MB)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def parse_serve_args(args):
    """`datasette serve` ARGS parsed by its own command: the click context
    (raises click's usage errors, as `datasette serve` would)."""
    return compat.serve_context(args)


def one_process_options(params):
    """The options among ``params`` that `datasette serve` must handle itself."""
    return [flag for name, flag in ONE_PROCESS_OPTIONS.items() if params.get(name)]


def make_datasette(args):
    """The Datasette instance `datasette serve ARGS` builds, not started yet."""
    return compat.serve_instance(args)


async def start(datasette):
    """What `datasette serve` does between building the instance and serving
    it: the startup hooks, then its checks of every database."""
    await datasette.invoke_startup()
    await compat.check_databases(datasette)


class WorkerApp:
    """The ASGI app of a worker: on the lifespan's startup it starts the
    Datasette instance (``start``) and only then makes its app, to which it
    hands everything (the lifespan included) from then on. A failure at
    startup is reported to uvicorn as such: the worker exits, and uvicorn
    stops the server."""

    def __init__(self, datasette):
        self.datasette = datasette
        self.app = None

    async def __call__(self, scope, receive, send):
        if self.app is None:
            if scope["type"] != "lifespan":  # uvicorn's lifespan="on" starts us first
                raise RuntimeError("the server was not started (lifespan)")
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await start(self.datasette)
                    self.app = self.datasette.app()
                except Exception as ex:  # noqa: BLE001 (told to uvicorn, which exits)
                    await send({"type": "lifespan.startup.failed", "message": f"{type(ex).__name__}: {ex}"})
                    return
            replayed = False

            async def receive_again():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return message
                return await receive()

            if self.app is None:  # shut down before it started
                return
            await self.app(scope, receive_again, send)
            return
        await self.app(scope, receive, send)


def die_with_parent(signum=signal.SIGTERM):
    """Have the kernel send ``signum`` to this process when its parent (the
    supervisor) dies, even by SIGKILL: a worker must not be left serving
    the port on its own. Linux only (prctl); elsewhere, nothing."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # it died before the call took effect
        os.kill(os.getpid(), signum)
    return True


def worker_app():
    """uvicorn's app factory in each worker (``factory=True``)."""
    die_with_parent()
    options = json.loads(os.environ[ENV_OPTIONS])
    return WorkerApp(make_datasette(options["args"]))


def uvicorn_args(params, workers, access_log):
    """The command line of the uvicorn supervisor: the workers' app factory,
    and what `datasette serve` passes to uvicorn.run."""
    return [
        sys.executable, "-m", "uvicorn", f"{__name__}:worker_app", "--factory", "--workers", str(workers),
        "--host", params["host"], "--port", str(params["port"]), "--lifespan", "on", "--log-level", "info",
        "--access-log" if access_log else "--no-access-log",
    ]


def run_datasette_serve(args):
    """`datasette serve ARGS`, as it is."""
    compat.run_datasette_serve(args)


def run(args, workers, access_log, explicit=False):
    """Serve `datasette serve ARGS` with ``workers`` processes. Options that
    need one process go to `datasette serve` itself (an error if ``workers``
    > 1 was asked for: ``explicit``)."""
    ctx = parse_serve_args(args)
    single = one_process_options(ctx.params)
    if single:
        if explicit and workers > 1:
            raise click.UsageError(f"{', '.join(single)} runs in one process: use --workers 1 with it")
        return run_datasette_serve(args)
    if workers > 1 and not ctx.params.get("secret"):
        # one secret for all the workers (signed cookies, CSRF tokens); in
        # their environment, where `datasette serve --secret` reads it, never
        # on a command line
        os.environ["DATASETTE_SECRET"] = secrets.token_hex(32)
    datasette = make_datasette(args)
    try:
        compat.run_sync(lambda: start(datasette))  # everything a worker does at start, once, here
    except ConfigError as ex:
        raise click.ClickException(str(ex)) from None
    if workers == 1:
        import uvicorn

        uvicorn.run(datasette.app(), host=ctx.params["host"], port=ctx.params["port"], log_level="info",
                    lifespan="on", workers=1, access_log=access_log)
        return
    for database in datasette.databases.values():
        database.close()
    os.environ[ENV_OPTIONS] = json.dumps({"args": list(args)})
    argv = uvicorn_args(ctx.params, workers, access_log)
    sys.stdout.flush()
    sys.stderr.flush()
    # This process becomes uvicorn's supervisor (same pid, so it gets the
    # signals): ~25 MB instead of the ~100 MB of a process with Datasette and
    # the plugin loaded, which the supervisor never uses.
    os.execv(argv[0], argv)
