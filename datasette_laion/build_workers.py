"""The build's machinery: worker processes, signals and progress.

* ``Worker``: a job of ``WORKER_JOBS`` in a child process (``python -m
  datasette_laion.worker JOB SPEC RESULT``), reporting progress lines; its
  failure comes back as ``WorkerError`` with the child's last line of stderr.
* ``Signals``: Ctrl-C and SIGTERM during a build, raised as KeyboardInterrupt
  where nothing is half-done (see its docstring).
* ``Steps``: progress bars and per-step wall times.
* ``remove_stale_work_dirs``: what builds that were killed outright left.

Nothing here knows what the jobs do; the build (build.py) decides.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from .build_db import build_fts
from .partition import partition_part

# The jobs a worker process can run: job(spec, progress) -> JSON-able result.
WORKER_JOBS = {"partition": partition_part, "fts": build_fts}


class WorkerError(Exception):
    """A worker process failed; the message is its last line of stderr."""


class Steps:
    """Progress bars (tqdm, on stderr) and per-step wall times."""

    def __init__(self, progress):
        self.progress = progress
        self.timings = {}
        self.current = "check"

    def bar(self, desc, total, unit="rows"):
        from tqdm import tqdm

        return tqdm(
            total=total, desc=f"{desc:<15}", unit=unit, unit_scale=True, disable=not self.progress,
            file=sys.stderr, dynamic_ncols=True, mininterval=0.5, smoothing=0.1,
        )

    def timed(self, name):
        steps = self

        class _Timer:
            def __enter__(self):
                steps.current = name
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                steps.timings[name] = steps.timings.get(name, 0.0) + time.perf_counter() - self.start

        return _Timer()



class Signals:
    """Ctrl-C (SIGINT) and SIGTERM during a build (``with``: from the main
    thread, as Python handles signals only there). They raise
    KeyboardInterrupt at once, as Python's own SIGINT handler does, except
    while ``held()``: where an exception at an arbitrary point could leave a
    lock taken (Popen's, a thread pool's, so that a later wait never ends) or
    a worker process unrecorded. There a signal is only noted, and raised as
    KeyboardInterrupt by ``check()``, at a safe point, or at the end of the
    (outermost) hold; with ``swallow``, dropped (the work it would have
    stopped is done, or being undone). Ignored signals stay ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.previous = {}
        self.holding = 0
        self.received = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                for signum in self.SIGNALS:
                    handler = signal.getsignal(signum)
                    if handler not in (signal.SIG_IGN, None):
                        self.previous[signum] = handler
                        signal.signal(signum, self._handle)
            except BaseException:  # a signal while they were being set
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum, frame):
        if not self.holding:
            raise KeyboardInterrupt
        self.received = signum

    @contextlib.contextmanager
    def held(self, swallow=False):
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding and self.received is not None:
            self.received = None
            if not swallow:
                raise KeyboardInterrupt

    def check(self):
        """Raise the signal noted while held, if any."""
        if self.received is not None:
            self.received = None
            raise KeyboardInterrupt


class Worker:
    """A job of WORKER_JOBS in a child process (``python -m
    datasette_laion.worker JOB SPEC``): progress comes as ``progress N``
    lines on its stdout, the result as JSON in a file, an error as the last
    line of its stderr."""

    def __init__(self, job, spec, work, name):
        self.spec_path = work / f"{name}.spec.json"
        self.result_path = work / f"{name}.result.json"
        self.spec_path.write_text(json.dumps(spec))
        self.done = 0
        self.stderr = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datasette_laion.worker", job, str(self.spec_path), str(self.result_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.readers = [
            threading.Thread(target=self._read_progress, daemon=True),
            threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_progress(self):
        for line in self.process.stdout:
            if line.startswith("progress "):
                self.done = int(line.split()[1])

    def finished(self):
        return self.process.poll() is not None

    def result(self):
        self.process.wait()
        for reader in self.readers:
            reader.join(timeout=5)
        if self.process.returncode in (130, -signal.SIGINT, -signal.SIGTERM):  # stopped by a signal to all
            raise KeyboardInterrupt
        if self.process.returncode != 0:
            lines = [line.rstrip() for line in self.stderr if line.strip()]
            raise WorkerError(lines[-1] if lines else f"worker ended with exit code {self.process.returncode}")
        return json.loads(self.result_path.read_text())

    def stop(self):
        """Terminate the process, kill it if it lingers; every wait bounded."""
        for end in (self.process.terminate, self.process.kill):
            if self.process.poll() is not None:
                return
            end()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def wait_all(workers, bar, check):
    """Wait for workers, updating ``bar`` with their summed progress;
    ``check()`` raises a signal held meanwhile (Signals)."""
    while not all(w.finished() for w in workers):
        time.sleep(0.25)
        check()
        bar.n = sum(w.done for w in workers)
        bar.refresh()
    results = [w.result() for w in workers]
    bar.n = sum(w.done for w in workers)
    bar.refresh()
    return results


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_work_dirs(out):
    """Work directories left by builds that were killed (SIGKILL, power loss)."""
    for path in out.parent.glob(f".{out.name}.build-*"):
        try:
            pid = int(path.name.split(".build-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
