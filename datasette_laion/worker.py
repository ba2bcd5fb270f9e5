"""Child processes of the build: ``python -m datasette_laion.worker JOB SPEC RESULT``.

JOB is a key of ``build_workers.WORKER_JOBS``; SPEC and RESULT are JSON files. The
worker prints ``progress N`` lines as it goes; an error goes to stderr as one
line, with exit code 1 (130 when interrupted).
"""
import json
import os
import sys

from .build_workers import WORKER_JOBS
from .source import SourceError


def main(argv):
    job, spec_path, result_path = argv
    with open(spec_path) as fp:
        spec = json.load(fp)
    done = 0
    parent = os.getppid()

    def progress(n):
        nonlocal done
        if os.getppid() != parent:  # the build is gone: stop, don't linger
            raise KeyboardInterrupt
        done += n
        print(f"progress {done}", flush=True)

    try:
        result = WORKER_JOBS[job](spec, progress)
    except KeyboardInterrupt:
        return 130
    except SourceError as ex:  # names the file already
        print(str(ex).replace("\n", " "), file=sys.stderr)
        return 1
    except Exception as ex:  # reported to the parent, which raises BuildError
        print(f"{type(ex).__name__}: {ex}".replace("\n", " "), file=sys.stderr)
        return 1
    with open(result_path, "w") as fp:
        json.dump(result, fp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
