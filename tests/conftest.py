"""Shared fixtures: generated parquet files and a database built from them by
the project's own build code, once per test session."""
import pytest
from datasette.database import Database

from datasette_laion import build, sample, site

# browser, server, screenshots: the fixtures of the browser tests
pytest_plugins = ["browser_support"]

SAMPLE_ROWS = 12_000
SAMPLE_FILES = 3
SAMPLE_SEED = 7


@pytest.fixture(scope="session")
def parquet_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("parquet")
    sample.generate(directory, rows=SAMPLE_ROWS, files=SAMPLE_FILES, seed=SAMPLE_SEED)
    return directory


@pytest.fixture(scope="session")
def built(parquet_dir, tmp_path_factory):
    """(BuildResult) of the sample, built with a small sort buffer so that the
    score buckets, and their order across buckets, are exercised, and with
    two partition workers."""
    out = tmp_path_factory.mktemp("db") / site.DATABASE_FILE
    return build.build(out, [parquet_dir], progress=False, sort_rows=2_500, batch_size=1_000, workers=2)


@pytest.fixture(scope="session")
def db_path(built):
    return built.path


@pytest.fixture
def db(db_path):
    import sqlite3

    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def ds(built):
    return site.make_datasette(built.path, built.inspect_path)


@pytest.fixture
def sql_calls(monkeypatch):
    """Call it to start counting trips to the SQL threads: the list it
    returns gets each trip's database name."""

    def start():
        calls = []
        original = Database.execute_fn

        async def counting(self, fn):
            calls.append(self.name)
            return await original(self, fn)

        monkeypatch.setattr(Database, "execute_fn", counting)
        return calls

    return start
