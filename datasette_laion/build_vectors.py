"""The build's embeddings step (``--embeddings``): after the images are
loaded, the vectors of the kept rows go into the vectors file in rowid
order, the index is built over them, and the near-duplicates are counted
into the database. The vectors file is written in the build's work
directory and renamed into place with the database (build.py's finish).
"""
import uuid

import numpy as np

from . import near_duplicates, vector_build, vector_index
from .partition import read_bucket, release_memory


def positions(buckets):
    """The source position of each kept row, in rowid order (from the
    buckets' spilled ``_pos``: nothing but that column is read)."""
    found = [read_bucket(parts, columns=[]).column("_pos").to_numpy() for parts, _ in buckets]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)


def run(path, files, buckets, conn, bar, exact_below=vector_index.EXACT_BELOW):
    """Write the vectors file ``path`` for ``files`` (embeddings.aligned's)
    and the near-duplicates into ``conn``; ``bar(desc, total)`` makes a
    progress bar. Returns the build_info facts."""
    release_memory()
    kept = positions(buckets)
    # write_vectors counts the source rows as it streams them, then the kept rows as it orders them
    with bar("embeddings", sum(f.rows for f in files) + len(kept)) as progress:
        rows, dim = vector_build.write_vectors(path, files, kept, progress.update)
    del kept
    release_memory()
    build_id = uuid.uuid4().hex
    with vector_build.RowReader(path, rows, dim) as vectors:
        with bar("vector index", rows) as progress:
            index, lists, description = vector_build.build_index(
                vectors, path.with_name(path.name + ".codes"), exact_below, progress.update)
        vector_build.finish_file(path, rows, dim, build_id, index, description)
        del index  # the near-duplicate pass needs only each row's list
        release_memory()
        with bar("near-duplicates", rows) as progress:
            count, roots = near_duplicates.find(vectors, lists, progress=progress.update)
    del lists
    conn.execute("begin")
    conn.execute(near_duplicates.CREATE_TABLE)
    conn.executemany(near_duplicates.INSERT, near_duplicates.table_rows(count, roots))
    conn.execute("create index near_duplicates_cluster on near_duplicates (cluster)")
    conn.execute("commit")
    return {
        "vectors_build_id": build_id,
        "vectors_dim": dim,
        "vectors_index": description,
        "vectors_source": ", ".join(f.path.name for f in files[:3]) + (", ..." if len(files) > 3 else ""),
        **near_duplicates.figures(count, roots),
    }
