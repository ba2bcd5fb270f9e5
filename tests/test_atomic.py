"""A failed or interrupted build leaves the previous database byte-for-byte
as it was, and no temporary files."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from datasette_laion import build, site


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def previous(tmp_path, parquet_dir):
    """A directory holding a good database and inspect file from an earlier build."""
    out = tmp_path / site.DATABASE_FILE
    build.build(out, [next(parquet_dir.glob("*.parquet"))], progress=False)
    return out, {p.name: _digest(p) for p in tmp_path.iterdir()}


def _unchanged(out, before):
    assert {p.name: _digest(p) for p in out.parent.iterdir()} == before


STEPS = ["scan", "partition", "rank_domains", "load", "create_indexes", "copy_fts", "count_names", "finish"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_failure_in_any_step_changes_nothing(previous, parquet_dir, monkeypatch, step, error):
    out, before = previous
    def failing(self, *args):
        raise error

    monkeypatch.setattr(build._Builder, step, failing)
    expected = KeyboardInterrupt if error is KeyboardInterrupt else build.BuildError
    with pytest.raises(expected) as raised:
        build.build(out, [parquet_dir], progress=False, sort_rows=3000)
    if expected is build.BuildError:
        assert "No space left on device" in str(raised.value)
    _unchanged(out, before)


def test_corrupt_data_page_fails_cleanly(previous, parquet_dir, tmp_path_factory):
    out, before = previous
    source = next(parquet_dir.glob("*.parquet"))
    bad_dir = tmp_path_factory.mktemp("corrupt")
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(4096)
    (bad_dir / "corrupt.parquet").write_bytes(bytes(data))
    pq.ParquetFile(bad_dir / "corrupt.parquet")  # the footer is intact: it passes the check
    with pytest.raises(build.BuildError, match="corrupt.parquet"):
        build.build(out, [parquet_dir, bad_dir], progress=False)
    _unchanged(out, before)


def test_rerun_after_failure_succeeds(previous, parquet_dir, monkeypatch):
    out, before = previous
    monkeypatch.setattr(build._Builder, "count_names", lambda self: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(build.BuildError):
        build.build(out, [parquet_dir], progress=False)
    monkeypatch.undo()
    result = build.build(out, [parquet_dir], progress=False)
    assert result.rows == sum(pq.read_metadata(p).num_rows for p in parquet_dir.glob("*.parquet"))
    assert _digest(out) != before[out.name]


def test_stale_work_directory_of_a_killed_build_is_removed(previous, parquet_dir):
    out, before = previous
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out.parent / f".{out.name}.build-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "build.db").write_bytes(b"x" * 1000)
    build.build(out, [parquet_dir], progress=False)
    assert not stale.exists()


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory):
    from datasette_laion import sample

    directory = tmp_path_factory.mktemp("big")
    sample.generate(directory, rows=300_000, files=2, seed=5)
    return directory


@pytest.mark.parametrize("delay", [0.0, 0.8, 2.0])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_cli_build(previous, big_parquet, delay, signum):
    """A real signal to `datasette laion build`, at several points in the build."""
    out, before = previous
    big = big_parquet
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette_laion", "build", str(out), str(big), "--silent"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(f".{out.name}.build-*")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(process.pid, signum)  # as a terminal's Ctrl-C does: the whole group
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the build finished before the signal")
    assert process.returncode == 130, stderr
    assert "Error: build interrupted." in stderr and "is as it was" in stderr
    _unchanged(out, before)
