"""The build's fault matrix: bad inputs, a full disk, Ctrl-C.

Every fault must

1. stop `datasette laion build` with a non-zero exit code (130 for a signal)
   and a message that names the file (or the place) and the problem, and
   says what to do;
2. leave the previous OUT.db and its inspect.json byte-for-byte as they were;
3. leave nothing else behind: no file beside OUT but OUT and inspect.json, an
   empty TMPDIR, no build process still running;
4. not get in the way of the next build: a re-run with good input succeeds.

Inputs that are refused are refused by the check, before anything is
written. The full-disk tests need a small tmpfs (root, or `unshare -rm`);
the signal tests find the step a build is in from its progress bars.
"""
import contextlib
import csv
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_laion import build, build_workers, sample, site
from datasette_laion.cli import laion

OUT = site.DATABASE_FILE


# ---------------------------------------------------------------------------
# The scene: a database from an earlier build, and the checks of 2-4.

def _digests(directory):
    """Every entry of ``directory``, hidden ones too: name -> sha256 (or "dir")."""
    found = {}
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            found[entry.name] = "dir"
        else:
            found[entry.name] = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
    return found


class Scene:
    """OUT and inspect.json from an earlier build, in a directory of their
    own, and an empty directory for the next build's TMPDIR."""

    def __init__(self, directory, tmpdir, previous):
        self.dir = Path(directory)
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.out = self.dir / OUT
        for name in (OUT, "inspect.json"):
            shutil.copyfile(previous / name, self.dir / name)
        self.before = _digests(self.dir)

    def env(self):
        env = dict(os.environ, TMPDIR=str(self.tmpdir), COLUMNS="100")
        env.pop("SQLITE_TMPDIR", None)  # SQLite would prefer it to TMPDIR
        return env

    def refused(self, message):
        """What the CLI says, exactly, when the build fails."""
        return f"Error: {message}\nNothing was written: {self.out} is as it was; fix the problem and run the build again.\n"

    def interrupted(self):
        return f"Error: build interrupted. {self.out} is as it was; fix the problem and run the build again.\n"

    def assert_untouched(self):
        """OUT and inspect.json byte-for-byte as they were, nothing beside
        them (no work directory, no temporary inspect file), TMPDIR empty."""
        assert _digests(self.dir) == self.before
        assert os.listdir(self.tmpdir) == []

    def assert_rerun_succeeds(self, good):
        """A build of ``good`` replaces OUT and inspect.json, which fit."""
        result = build.build(self.out, [good], progress=False, workers=1)
        assert result.rows == pq.read_metadata(good).num_rows
        after = _digests(self.dir)
        assert sorted(after) == sorted(self.before)
        assert json.loads((self.dir / "inspect.json").read_text())[build.database_name(self.out)]["hash"] == after[OUT]


@pytest.fixture(scope="module")
def good_table():
    """500 generated rows, the exact v2 schema: the good input, and what the
    bad ones are made from."""
    world = sample._World(21, 500)
    return sample._chunk(world, np.random.default_rng(21), 500, False, 0)


@pytest.fixture(scope="module")
def good(good_table, tmp_path_factory):
    """A good parquet file: the earlier build is made from it, and the re-runs."""
    path = tmp_path_factory.mktemp("good") / "good.parquet"
    pq.write_table(good_table, path, row_group_size=100)
    return path


@pytest.fixture(scope="module")
def previous(good, tmp_path_factory):
    """The directory of an earlier build: OUT and inspect.json."""
    out = tmp_path_factory.mktemp("previous") / OUT
    build.build(out, [good], progress=False, workers=1)
    return out.parent


@pytest.fixture
def scene(tmp_path, previous):
    (tmp_path / "site").mkdir()
    return Scene(tmp_path / "site", tmp_path / "tmp", previous)


def run_cli(scene, monkeypatch, *args):
    """`datasette laion build OUT ARGS...` in this process, with TMPDIR set to
    the scene's: (exit code, stderr)."""
    monkeypatch.setenv("TMPDIR", str(scene.tmpdir))
    monkeypatch.delenv("SQLITE_TMPDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    result = CliRunner().invoke(laion, ["build", str(scene.out), *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def _pattern(message):
    """A message as a regex; "…" stands for pyarrow's own wording."""
    return "".join(".+" if part == "…" else re.escape(part) for part in re.split("(…)", message))


# ---------------------------------------------------------------------------
# Bad inputs: refused by the check, before anything is written.

def _write(table, path, **options):
    pq.write_table(table, path, **options)
    return path


def _footer_start(data):
    return len(data) - 8 - struct.unpack("<i", data[-8:-4])[0]


def _row_group_span(path, index):
    """(first byte, end) of a row group's column chunks in the file."""
    group = pq.read_metadata(path).row_group(index)
    starts = [min(c.data_page_offset, c.dictionary_page_offset or c.data_page_offset)
              for c in (group.column(i) for i in range(group.num_columns))]
    ends = [c.data_page_offset + c.total_compressed_size for c in (group.column(i) for i in range(group.num_columns))]
    return min(starts), max(ends)


def _damaged(good, path, change):
    """A copy of the good file (5 row groups of 100 rows) with its bytes changed."""
    path.write_bytes(change(good.read_bytes(), good))
    return path


def _overwrite(data, at, length=64):
    return data[:at] + b"\xff" * length + data[at + length:]


def _set_column(table, name, array):
    return table.set_column(table.column_names.index(name), name, array)


def _retyped(name, arrow_type):
    return lambda t: _set_column(t, name, pc.cast(t.column(name), arrow_type, safe=False))


FETCH = "fetch the file again"
TRUNCATED = (
    "truncated parquet file: it starts as parquet but its end (the footer) is missing, "
    f"as after an interrupted download (…); {FETCH}"
)
BAD_FILES = {
    # case: (how the bad file is made from the good one, the error after "<file>: ")
    "garbage named .parquet": (
        lambda data, good: b"URL,TEXT\nhttps://example.com/a.jpg,a cat\n",
        "not a parquet file (it neither starts nor ends with PAR1); check that it is the right file",
    ),
    "empty file": (lambda data, good: b"", f"empty file (0 bytes), not parquet; {FETCH}"),
    "damaged magic at the start": (
        lambda data, good: b"PAR0" + data[4:],
        f"damaged parquet file: it does not start with PAR1; {FETCH}",
    ),
    "corrupt footer": (
        lambda data, good: _overwrite(data, (_footer_start(data) + len(data)) // 2),
        f"corrupt parquet footer, cannot read the file (…); {FETCH}",
    ),
    "truncated in the last bytes": (
        lambda data, good: data[:-2],
        TRUNCATED,
    ),
    "truncated mid-footer": (
        lambda data, good: data[: (_footer_start(data) + len(data)) // 2],
        TRUNCATED,
    ),
    "truncated mid-row-group": (
        lambda data, good: data[: sum(_row_group_span(good, 2)) // 2],
        TRUNCATED,
    ),
}
BAD_SCHEMAS = {
    # case: (change to the good table, the error after "<file>: ")
    "missing URL": (lambda t: t.drop_columns(["URL"]), "missing required column 'URL' (for images.url)"),
    "missing AESTHETIC_SCORE": (
        lambda t: t.drop_columns(["AESTHETIC_SCORE"]),
        "missing required column 'AESTHETIC_SCORE' or 'aesthetic' (for images.aesthetic)",
    ),
    "URL as int64": (
        lambda t: _set_column(t, "URL", pa.array(range(len(t)))),
        "column 'URL' has type int64, expected a string",
    ),
    "TEXT as binary": (_retyped("TEXT", pa.binary()), "column 'TEXT' has type binary, expected a string"),
    "AESTHETIC_SCORE as string": (
        _retyped("AESTHETIC_SCORE", pa.string()),
        "column 'AESTHETIC_SCORE' has type string, expected a number (integer or floating point)",
    ),
    "WIDTH as string": (
        _retyped("WIDTH", pa.string()),
        "column 'WIDTH' has type string, expected a number (integer or floating point)",
    ),
    "HEIGHT as bool": (
        _retyped("HEIGHT", pa.bool_()),
        "column 'HEIGHT' has type bool, expected a number (integer or floating point)",
    ),
    "similarity as string": (
        _retyped("similarity", pa.string()),
        "column 'similarity' has type string, expected a number (integer or floating point)",
    ),
    "hash as double": (_retyped("hash", pa.float64()), "column 'hash' has type double, expected an integer or a string"),
    "__index_level_0__ as string": (
        _retyped("__index_level_0__", pa.string()),
        "column '__index_level_0__' has type string, expected an integer",
    ),
    "a column twice": (
        lambda t: pa.table(t.columns + [t.column("punsafe")], names=t.column_names + ["punsafe"]),
        "column 'punsafe' appears twice",
    ),
    "an extra column name with ]": (
        lambda t: t.append_column("x[0]", pa.array([0.5] * len(t))),
        "extra column 'x[0]': a column name cannot contain ']'",
    ),
}


# A refused input leaves everything exactly as it was, and nothing was begun
# (no progress bar, no work directory, no worker): the next build starts from
# the same place as the one before it, so these tests do not re-run one.

@pytest.mark.parametrize("case", list(BAD_FILES) + list(BAD_SCHEMAS))
def test_bad_input_file_is_refused_before_writing(scene, good, good_table, tmp_path, monkeypatch, case):
    """The bad file comes after a good one: the check reads every footer first."""
    bad = tmp_path / "zz-bad.parquet"
    if case in BAD_FILES:
        make, message = BAD_FILES[case]
        _damaged(good, bad, make)
    else:
        change, message = BAD_SCHEMAS[case]
        _write(change(good_table), bad)
    code, stderr = run_cli(scene, monkeypatch, good, bad)
    assert code == 1
    # The whole of stderr: no progress bar, so nothing was begun.
    assert re.fullmatch(_pattern(scene.refused(f"{bad}: {message}")), stderr), stderr
    scene.assert_untouched()


def _no_rows(directory, files):
    directory.mkdir()
    return [_write(sample.SCHEMA.empty_table(), directory / f"{i}.parquet") for i in range(files)]


@pytest.mark.parametrize(
    "case",
    ["missing input", "empty directory", "directory without parquet files", "one file without rows", "files without rows"],
)
def test_nothing_to_build_from_is_refused(scene, tmp_path, monkeypatch, case):
    """No input rows at all would replace the database with an empty one."""
    inputs = tmp_path / "inputs"
    if case == "missing input":
        message = f"{inputs}: no such file or directory"
    elif case == "empty directory":
        inputs.mkdir()
        message = f"{inputs}: directory holds no *.parquet files"
    elif case == "directory without parquet files":
        inputs.mkdir()
        (inputs / "train.csv").write_text("URL,TEXT\n")
        (inputs / "notes.parquet.partial").write_bytes(b"PAR1")
        message = f"{inputs}: directory holds no *.parquet files"
    elif case == "one file without rows":
        [path] = _no_rows(inputs, 1)
        message = f"{path}: no rows to build from (1 parquet file, 0 rows); give the files that hold the data"
    else:
        paths = _no_rows(inputs, 5)
        message = (
            f"{paths[0]}, {paths[1]}, {paths[2]} and 2 more: no rows to build from (5 parquet files, 0 rows); "
            "give the files that hold the data"
        )
    code, stderr = run_cli(scene, monkeypatch, inputs)
    assert (code, stderr) == (1, scene.refused(message))
    scene.assert_untouched()


def test_file_without_rows_among_good_ones_is_built(scene, good, tmp_path, monkeypatch):
    [empty] = _no_rows(tmp_path / "empty", 1)
    code, stderr = run_cli(scene, monkeypatch, empty, good)
    assert code == 0, stderr
    assert "images:      500 rows from 500 parquet rows" in stderr
    with contextlib.closing(sqlite3.connect(scene.out)) as conn:
        assert conn.execute("select name, rows from source_files order by rowid").fetchall() == [
            (empty.name, 0), (good.name, 500),
        ]
    assert os.listdir(scene.tmpdir) == []


# ---------------------------------------------------------------------------
# Bad data found only while reading, after writing began.

READ_FAULTS = {
    # case: (the bad file, made from the good table and file; the error after "<file>: ")
    "corrupt data page": (
        lambda table, good, path: _damaged(good, path, lambda data, g: _overwrite(data, _row_group_span(g, 2)[0] + 500)),
        f"read failed (…): the file is damaged or changed during the build; {FETCH}",
    ),
    "uint64 beyond SQLite's integers": (
        lambda table, good, path: _write(
            table.append_column("x_id", pa.array([5] * 400 + [2**64 - 1] * 100, pa.uint64())), path, row_group_size=100
        ),
        "column 'x_id' (uint64): Integer value 18446744073709551615 not in range: 0 to 9223372036854775807",
    ),
}


@pytest.mark.parametrize("case", READ_FAULTS)
def test_bad_data_found_while_reading_fails_cleanly(scene, good, good_table, tmp_path, monkeypatch, case):
    make, message = READ_FAULTS[case]
    bad = make(good_table, good, tmp_path / "zz-bad.parquet")
    code, stderr = run_cli(scene, monkeypatch, good, bad)
    assert code == 1
    assert "read parquet" in stderr  # the check passed it: the build had begun
    assert re.search(_pattern(scene.refused(f"{bad}: {message}")) + r"\Z", stderr), stderr
    scene.assert_untouched()
    scene.assert_rerun_succeeds(good)


def test_absurd_width_does_not_crash(scene, good, good_table, tmp_path, monkeypatch):
    """A WIDTH of 1e300 is a number: built (as REAL), or refused by name; never a traceback."""
    bad = _write(_set_column(good_table, "WIDTH", pa.array([1e300] * len(good_table))), tmp_path / "wide.parquet")
    code, stderr = run_cli(scene, monkeypatch, bad)  # raises what the CLI let through
    if code:
        assert stderr.startswith(f"Error: {bad}: "), stderr
        scene.assert_untouched()
    else:
        scene.assert_rerun_succeeds(good)


# ---------------------------------------------------------------------------
# A failure in any step, injected: an OSError (as a full disk raises it).

STEPS = ["scan", "partition", "rank_domains", "load", "create_indexes", "copy_fts", "count_names", "finish"]


@pytest.mark.parametrize("step", STEPS)
def test_os_error_in_any_step_changes_nothing(scene, parquet_dir, monkeypatch, step):
    def failing(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build._Builder, step, failing)
    with pytest.raises(build.BuildError, match=r"^OSError: \[Errno 28\] No space left on device\nThe disk is full: "):
        build.build(scene.out, [parquet_dir], progress=False, sort_rows=3000)
    assert _digests(scene.dir) == scene.before


def test_stale_work_directory_of_a_killed_build_is_removed(scene, good):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = scene.dir / f".{OUT}.build-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "build.db").write_bytes(b"x" * 1000)
    scene.assert_rerun_succeeds(good)
    assert not stale.exists()


# ---------------------------------------------------------------------------
# The CLI in a process of its own, watched through its progress bars.

# Each step's progress bar, as the build draws it, in order. The check draws
# none; the finish step draws "checksum" only after its statistics.
BARS = [
    ("scan scores", "scan"), ("read parquet", "partition"), ("load images", "load"), ("indexes", "indexes"),
    ("full-text index", "full-text index"), ("name counts", "names"), ("checksum", "finish"),
]
BAR_START = {step: re.escape(f"{desc:<15}:") for desc, step in BARS}
NAMES_DONE = re.escape(f"{'name counts':<15}:") + r" 100%[^\r\n]*\n"  # the finish begins


def _step_of(stderr):
    """The step a build was in when it stopped, from the bars it drew."""
    if "\nBuilt " in stderr:
        return "done"
    step = "check"
    for segment in re.split(r"[\r\n]+", stderr):
        for desc, name in BARS:
            if segment.startswith(f"{desc:<15}:"):
                step = "finish" if name == "names" and " 100%|" in segment else name
    return step


def _processes_in_group(pgid):
    """Live processes (not zombies) of a process group: [(pid, command line)]."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            found.append((int(entry.name), command))
    return found


class CliBuild:
    """`python -m datasette_laion build ARGS` in a process group of its own,
    as a shell runs a command; its stderr (the progress bars) is read as it
    comes, and ``trigger=(pattern, action)`` calls ``action(self)`` the
    moment the pattern appears in it."""

    def __init__(self, args, env, python=("-m", "datasette_laion"), trigger=None):
        self.triggers = [trigger] if trigger else []
        self.process = subprocess.Popen(
            [sys.executable, *python, "build", *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, start_new_session=True,
        )
        self.pid = self.process.pid
        self.stderr = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = os.read(self.process.stderr.fileno(), 65536)
            if not chunk:
                return
            self.stderr += chunk.decode(errors="replace")
            for pattern, action in list(self.triggers):
                if re.search(pattern, self.stderr):
                    self.triggers.remove((pattern, action))
                    action(self)

    def finish(self, timeout=120):
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # A hung build: its threads' stacks (the CLI's SIGUSR1), then the failure.
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(2)
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()
            self.reader.join(timeout=10)
            pytest.fail(f"the build did not end within {timeout} s; its stderr:\n{self.stderr[-6000:]}")
        finally:
            if self.process.poll() is None:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(timeout=10)
        self.process.stderr.close()
        return self.process.returncode, self.stderr

    def assert_no_process_left(self):
        assert _processes_in_group(self.pid) == []


# Inputs on which the steps last long enough to be caught in.

@pytest.fixture(scope="module")
def rows_parquet(tmp_path_factory):
    """40,000 rows in one file: load and indexes take a while."""
    return sample.generate(tmp_path_factory.mktemp("rows"), rows=40_000, files=1, seed=31)[0]


@pytest.fixture(scope="module")
def scan_parquet(rows_parquet, tmp_path_factory):
    """240,000 rows: more than the build sorts in memory, so it scans them first."""
    table = pq.read_table(rows_parquet)
    path = tmp_path_factory.mktemp("scan") / "scan.parquet"
    return _write(pa.concat_tables([table] * 6), path, row_group_size=40_000)


@pytest.fixture(scope="module")
def text_parquet(tmp_path_factory):
    """5,000 rows with captions 40 times as long and 16 kB of padding each:
    the full-text index takes a while, and the finish (fsync and checksum of
    an 100 MB file)."""
    rows = 5_000
    table = sample._chunk(sample._World(41, rows), np.random.default_rng(41), rows, False, 0)
    text = table.column("TEXT").combine_chunks()
    captions = text.fill_null("")
    longer = pc.binary_join_element_wise(
        *[pc.take(captions, pa.array((np.arange(rows) * 7 + k * 101) % rows)) for k in range(40)], " "
    )
    table = _set_column(table, "TEXT", pc.if_else(text.is_null(), pa.nulls(rows, pa.string()), longer))
    rng = np.random.default_rng(41)
    table = table.append_column("x_pad", pa.array([rng.bytes(16_384) for _ in range(rows)], pa.binary()))
    return _write(table, tmp_path_factory.mktemp("text") / "text.parquet", row_group_size=1_250)


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory):
    """150 two-word names of common words: counting them takes a while."""
    directory = tmp_path_factory.mktemp("names")
    with open(directory / "artists.csv", "w", newline="") as fp:
        writer = csv.writer(fp)
        writer.writerow(["name"])
        writer.writerows([f"{a} {b}"] for a, b in itertools.islice(itertools.product(sample.COMMON_WORDS, repeat=2), 150))
    return directory


# ---------------------------------------------------------------------------
# A full disk: a small tmpfs, for OUT's directory, for TMPDIR, for inspect.json.

@contextlib.contextmanager
def tmpfs(directory, size):
    """A tmpfs of ``size`` bytes mounted on ``directory`` for the test. It
    takes root (CAP_SYS_ADMIN), as in CI; other users can run the tests in a
    user and mount namespace of their own: `unshare -rm .venv/bin/python -m
    pytest tests/test_faults.py`."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: run under `unshare -rm` (or as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (no CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def _used(path):
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


PAGE = 4096
# The steps in which OUT's filesystem can be made to fill up (each writes
# there; "names" and "finish" add less than the full-text copy gave back).
DISK_STEPS = {"partition": "partition", "load": "load", "create_indexes": "indexes", "copy_fts": "full-text index"}
# Shrinks the memory of SQLite's index sort, so that 40,000 rows spill it to
# TMPDIR as the whole data does at the default 16 MB.
SMALL_SORT = (
    "import sys; from datasette_laion import cli, sql; "
    "sql.INDEX_PRAGMAS += 'pragma cache_size = -64;'; "
    "cli.laion(sys.argv[1:], prog_name='python -m datasette_laion')"
)


@pytest.fixture(scope="module")
def space_by_step(previous, parquet_dir, tmp_path_factory):
    """The most space in use on OUT's filesystem during each step of a build
    of ``parquet_dir`` (previous files included; "check" is before the first
    step), measured on a roomy tmpfs."""
    base = tmp_path_factory.mktemp("space")
    with tmpfs(base / "mnt", 256 * 1024 * 1024) as mnt:
        scene = Scene(mnt, base / "tmp", previous)
        step, peaks = ["check"], {"check": _used(mnt)}
        done = threading.Event()

        def poll():
            while not done.is_set():
                peaks[step[0]] = max(peaks.get(step[0], 0), _used(mnt))
                time.sleep(0.001)

        def watched(name, method):
            def run_step(self, *args):
                step[0] = name
                try:
                    return method(self, *args)
                finally:
                    peaks[name] = max(peaks.get(name, 0), _used(mnt))

            return run_step

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            with pytest.MonkeyPatch.context() as patch:
                for name in [*DISK_STEPS, "count_names", "finish"]:
                    patch.setattr(build._Builder, name, watched(name, getattr(build._Builder, name)))
                build.build(scene.out, [parquet_dir], progress=False)
        finally:
            done.set()
            poller.join()
    return peaks


class FullDiskRun:
    """A CLI build (``args`` after OUT) that runs out of space in ``full``,
    and what it left: the tests look at it after the tmpfs is gone."""

    def __init__(self, scene, args, full, good, python=("-m", "datasette_laion")):
        self.full, self.out = full, scene.out
        used = _used(full)
        run = CliBuild([scene.out, *args], scene.env(), python=python)
        self.code, self.stderr = run.finish()
        self.step = _step_of(self.stderr)
        lines = self.stderr.splitlines()
        last = max((i for i, line in enumerate(lines) if line.startswith("Error: ")), default=len(lines))
        self.error = "\n".join(lines[last:])  # the message, with its explanation lines
        self.left_running = _processes_in_group(run.pid)
        self.before, self.after = scene.before, _digests(scene.dir)
        self.tmp_left = os.listdir(scene.tmpdir)
        self.space_given_back = _used(full) == used
        try:
            scene.assert_rerun_succeeds(good)
            self.rerun = "ok"
        except Exception as ex:  # noqa: BLE001 (the test reports it)
            self.rerun = f"{type(ex).__name__}: {ex}"


@pytest.fixture(scope="module")
def full_disk(previous, good, parquet_dir, rows_parquet, space_by_step, tmp_path_factory):
    """case -> FullDiskRun, each case run once for the tests that look at it."""
    runs = {}

    def out_directory(step):
        """OUT's directory on a tmpfs that fills up in the middle of ``step``."""
        order = list(space_by_step)
        before = max(space_by_step[s] for s in order[: order.index(step)])
        during = space_by_step[step]
        if during - before < 16 * PAGE:
            pytest.skip(f"{step} writes only {during - before} bytes more than the steps before it")
        base = tmp_path_factory.mktemp("full")
        with tmpfs(base / "mnt", (before + (during - before) * 2 // 3) // PAGE * PAGE) as mnt:
            return FullDiskRun(Scene(mnt, base / "tmp", previous), [parquet_dir], mnt, good)

    def tmpdir():
        """TMPDIR on a tmpfs of one page: SQLite's index sort spills there."""
        base = tmp_path_factory.mktemp("full")
        (base / "site").mkdir()
        with tmpfs(base / "tmp", PAGE) as tmp:
            return FullDiskRun(Scene(base / "site", tmp, previous), [rows_parquet], tmp, good, python=("-c", SMALL_SORT))

    def inspect_directory():
        """--inspect-file on a tmpfs that the previous inspect.json fills."""
        base = tmp_path_factory.mktemp("full")
        (base / "site").mkdir()
        with tmpfs(base / "meta", PAGE) as meta:
            shutil.copyfile(previous / "inspect.json", meta / "inspect.json")
            meta_before = _digests(meta)
            scene = Scene(base / "site", base / "tmp", previous)
            run = FullDiskRun(scene, [parquet_dir, "--inspect-file", meta / "inspect.json"], meta, good)
            run.meta_unchanged = _digests(meta) == meta_before
            return run

    def get(case):
        if case not in runs:
            if case in DISK_STEPS:
                runs[case] = out_directory(case)
            else:
                runs[case] = {"TMPDIR": tmpdir, "inspect directory": inspect_directory}[case]()
        return runs[case]

    return get


FULL_DISK_CASES = {
    # case: the step it stops in
    **{step: bar for step, bar in DISK_STEPS.items()},
    "TMPDIR": "indexes",
    "inspect directory": "finish",
}


@pytest.mark.parametrize("case", FULL_DISK_CASES)
def test_full_disk(full_disk, case):
    """OUT's filesystem fills up in the middle of a step (the partition's
    spill files, the load, an index, the full-text copy), or TMPDIR does
    (SQLite's index sort), or the directory of --inspect-file does (at the
    end): the previous files stay intact, the space is given back."""
    run = full_disk(case)
    assert run.code == 1
    assert run.step == FULL_DISK_CASES[case], run.stderr
    assert "No space left on device" in run.error or "database or disk is full" in run.error, run.stderr
    assert run.stderr.endswith(f"\nNothing was written: {run.out} is as it was; fix the problem and run the build again.\n")
    assert run.left_running == []
    assert run.after == run.before and run.tmp_left == []
    assert run.space_given_back
    if case == "inspect directory":
        assert run.meta_unchanged
    assert run.rerun == "ok"


@pytest.mark.parametrize("case", ["load", "TMPDIR", "inspect directory"])
def test_full_disk_message_says_where(full_disk, case):
    run = full_disk(case)
    assert str(run.full) in run.error, run.error
    assert "no space left" in run.error.lower() or "disk is full" in run.error.lower(), run.error


# ---------------------------------------------------------------------------
# Ctrl-C (SIGINT) at the start of every step, and SIGTERM.

# The partition workers' first rows counted on the bar: they are running.
PARTITION_RUNNING = BAR_START["partition"] + r"[^\r\n]*\| (?!0\.00/)[\d.]+k?/"
SIGNAL_CASES = {
    # case: (input, signal, to whom, the step, when in it)
    "check": ("rows", signal.SIGINT, "group", "check", "start"),
    "scan": ("scan", signal.SIGINT, "group", "scan", "start"),
    "partition": ("rows", signal.SIGINT, "group", "partition", "start"),
    "load": ("rows", signal.SIGINT, "group", "load", "start"),
    "indexes": ("rows", signal.SIGINT, "group", "indexes", "start"),
    "full-text index": ("text", signal.SIGINT, "group", "full-text index", "start"),
    "names": ("text", signal.SIGINT, "group", "names", "start"),
    "finish": ("text", signal.SIGINT, "group", "finish", "start"),
    # 240,000 rows in 100-row batches: the workers still run when the signal comes, even on a busy machine
    "partition, main process only": ("scan", signal.SIGINT, "main", "partition", "workers running"),
    "load, main process only": ("rows", signal.SIGINT, "main", "load", "start"),
    "partition, SIGTERM": ("rows", signal.SIGTERM, "group", "partition", "start"),
}


def _children(pid):
    """The child processes of ``pid`` (one read: quick enough to come before a signal)."""
    try:
        return (Path("/proc") / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        return []


@pytest.mark.parametrize("case", SIGNAL_CASES)
def test_signal(case, scene, good, names_dir, tmp_path, request):
    """A real signal to `python -m datasette_laion build`: to its process
    group as a terminal's Ctrl-C sends it (the partition and full-text workers
    get it too), or to the main process only, while workers run. The step is
    found from the progress bars: the signal goes the moment a step draws
    its bar (the finish: when the names bar completes; the partition workers:
    when they have counted rows). The check is caught reading a names list
    that is a FIFO."""
    data, signum, whom, step, when = SIGNAL_CASES[case]
    inputs = request.getfixturevalue(f"{data}_parquet")
    options = ["--batch-size", 100 if data == "scan" else 2_000]
    if data == "text":
        options += ["--names-dir", names_dir]
    workers = []

    def send(run):
        workers.extend(_children(run.pid))
        (os.killpg if whom == "group" else os.kill)(run.pid, signum)

    if step == "check":
        fifo = tmp_path / "names" / "artists.csv"
        fifo.parent.mkdir()
        os.mkfifo(fifo)
        run = CliBuild([scene.out, inputs, *options, "--names-dir", fifo.parent], scene.env())
        writer = _open_fifo_writer(fifo, run.process)  # the build is reading it now
        send(run)
    else:
        pattern = PARTITION_RUNNING if when == "workers running" else NAMES_DONE if step == "finish" else BAR_START[step]
        run = CliBuild([scene.out, inputs, *options], scene.env(), trigger=(pattern, send))
    code, stderr = run.finish()
    if step == "check":
        os.close(writer)
    assert _step_of(stderr) == step, f"the signal was meant for {step}:\n{stderr}"
    assert code == 130, stderr
    assert stderr.endswith(scene.interrupted()), stderr
    if whom == "main":
        assert workers, "the signal was meant for a time when workers ran"
    run.assert_no_process_left()
    scene.assert_untouched()
    scene.assert_rerun_succeeds(good)


def _open_fifo_writer(path, process, timeout=60):
    """The write end of a FIFO, opened once ``process`` has opened it to read."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert process.poll() is None, "the build ended before reading the names list"
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_interrupt_as_a_worker_starts_leaves_no_worker(scene, parquet_dir, monkeypatch):
    """Ctrl-C the moment the first partition worker has started, before the
    build has put it on its list: the build must stop it all the same."""
    start = build_workers.Worker.__init__

    def started_then_interrupted(self, *args):
        start(self, *args)
        monkeypatch.setattr(build_workers.Worker, "__init__", start)
        os.kill(os.getpid(), signal.SIGINT)  # handled here, before __init__ returns

    monkeypatch.setattr(build_workers.Worker, "__init__", started_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.build(scene.out, [parquet_dir], progress=False, workers=2)
    left = [p for p in _processes_in_group(os.getpgid(0)) if "datasette_laion.worker" in p[1]]
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []
    scene.assert_untouched()


# Python's own SIGINT handler raises KeyboardInterrupt wherever the main
# thread is, also just after it took a lock and before the try (or with) that
# releases it. This build takes the signal there: run with two partition
# workers, as on the usual two cores.
LOCK_TAKEN_THEN_INTERRUPTED = """
import os, signal, sys, threading
from concurrent.futures import _base
from datasette_laion import build_workers, cli

fired = []

def interrupt():
    # Ctrl-C to this process only, handled as os.kill returns: the lock is taken.
    if not fired and threading.current_thread() is threading.main_thread():
        fired.append(True)
        os.kill(os.getpid(), signal.SIGINT)

class WaitpidLock:
    # Popen's: Popen.poll() takes it with acquire(False), then enters its try.
    def __init__(self):
        self.lock = threading.Lock()
    def acquire(self, blocking=True, timeout=-1):
        taken = self.lock.acquire(blocking, timeout)
        if taken and not blocking:
            interrupt()
        return taken
    def release(self):
        self.lock.release()
    def __enter__(self):
        self.lock.acquire()
    def __exit__(self, *exc):
        self.lock.release()

class Condition(threading.Condition):
    # A future's: Future.result() takes it in __enter__, then enters its with.
    def __enter__(self):
        taken = super().__enter__()
        interrupt()
        return taken

os.cpu_count = lambda: 2
if sys.argv[1] == "partition":
    start = build_workers.Worker.__init__
    def started(self, *args):
        start(self, *args)
        self.process._waitpid_lock = WaitpidLock()
    build_workers.Worker.__init__ = started
else:
    init = _base.Future.__init__
    def future(self):
        init(self)
        self._condition = Condition()
    _base.Future.__init__ = future
cli.laion(sys.argv[2:], prog_name="python -m datasette_laion")
"""


@pytest.mark.parametrize("step", ["partition", "load"])
def test_interrupt_just_after_a_lock_is_taken(step, scene, good, rows_parquet):
    """Ctrl-C to the main process as it polls a partition worker (with
    Popen's lock taken: the cleanup's wait for that worker then never ended),
    or as it waits for the load's reader thread (with the future's lock
    taken: the thread, and the thread pool's shutdown, then never ended). The
    build holds signals while it waits for workers and threads, and raises
    them where nothing is half-done."""
    run = CliBuild([scene.out, rows_parquet, "--batch-size", 2_000], scene.env(),
                   python=("-c", LOCK_TAKEN_THEN_INTERRUPTED, step))
    code, stderr = run.finish(timeout=60)
    assert _step_of(stderr) == step, stderr
    assert code == 130, stderr
    assert stderr.endswith(scene.interrupted()), stderr
    run.assert_no_process_left()
    scene.assert_untouched()
    scene.assert_rerun_succeeds(good)


def test_interrupt_between_the_two_renames_leaves_a_matching_pair(scene, good, monkeypatch):
    """OUT and inspect.json are replaced together or not at all."""
    replace = os.replace

    def replaced_then_interrupted(source, target):
        replace(source, target)
        if Path(target) == scene.out:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(build.os, "replace", replaced_then_interrupted)
    with contextlib.suppress(KeyboardInterrupt):
        build.build(scene.out, [good], progress=False, workers=1)
    after = _digests(scene.dir)
    assert sorted(after) == sorted(scene.before)
    inspect = json.loads((scene.dir / "inspect.json").read_text())[build.database_name(scene.out)]
    assert inspect["hash"] == after[OUT]
