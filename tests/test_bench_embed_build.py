"""scripts/bench_embed_build.py: one small run of the whole script on inputs
it generates, as the README's 12M run is made (--generate)."""
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_embed_build.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_generated_inputs_built_step_by_step(tmp_path):
    run = _run(tmp_path, "--generate", 2000)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "generated inputs: 2,000 rows" in out and "4,096 clusters" in out and "2% planted" in out
    assert "without --embeddings (baseline):" in out and "with --embeddings:" in out
    for step in ("read parquet", "embeddings", "vector index", "near-duplicates", "checksum"):
        assert f"\n  {step} " in out
    assert "near-duplicates: 0 s (target <= 900 s)" in out and "(target <= 2048 MB)" in out
    assert (tmp_path / "laion-aesthetic-6pls.db").exists() and (tmp_path / "laion-aesthetic-6pls.vectors").exists()
    vectors = tmp_path / "emb" / "img_emb_0000.npy"
    assert np.load(vectors, mmap_mode="r").shape == (2000, 768)
    # a second run reuses what the first made
    made = vectors.stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in (tmp_path / "src").iterdir())
    assert _run(tmp_path, "--generate", 2000, "--no-baseline").returncode == 0
    assert made == (vectors.stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in (tmp_path / "src").iterdir()))


def test_inputs_are_given_or_generated(tmp_path):
    for args in ([], [tmp_path / "in"], ["--embeddings", tmp_path / "e.npy"], ["--embeddings", "e.npy", "--generate", 10],
                 [tmp_path / "in", "--embeddings", tmp_path / "e.npy", "--generate", 10]):
        run = _run(tmp_path, *args)
        assert run.returncode == 2 and "give INPUTS and --embeddings PATH, or --generate N" in run.stderr
