"""Datasette plugin for the LAION-Aesthetics image metadata: hooks only.

The work is done in the modules behind them: functions (SQL functions),
source/build (parquet -> SQLite), sample (generated data), cli (commands).
"""
from datasette import hookimpl

from . import functions

from .version import __version__  # noqa: F401


@hookimpl
def prepare_connection(conn):
    conn.create_function("domain", 1, functions.domain, deterministic=True)
    conn.create_function("fts_phrase", 1, functions.fts_phrase, deterministic=True)
    conn.create_function("registered_domain", 1, functions.registered_domain, deterministic=True)
    conn.create_function("url_hash", 1, functions.url_hash, deterministic=True)


@hookimpl
def register_commands(cli):
    from .cli import laion

    cli.add_command(laion)
