"""Child process of the build: ``python -m datasette_laion.fts_worker SPEC``.

Builds the full-text index side database (see ``build.build_fts``) and prints
``indexed N`` lines as it goes; errors go to stderr, one line, exit code 1.
"""
import json
import sys

from .build import build_fts


def main(argv):
    spec = json.loads(argv[0])
    done = 0

    def progress(n):
        nonlocal done
        done += n
        print(f"indexed {done}", flush=True)

    try:
        build_fts(spec["db"], [(p, f) for p, f in spec["buckets"]], spec["batch_size"], progress)
    except KeyboardInterrupt:
        return 130
    except Exception as ex:  # reported to the parent, which raises BuildError
        print(f"{type(ex).__name__}: {ex}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
