"""``scripts/gpu_carry.sh`` prepares what the one GPU call carries: the real training sarcomas that
fit beside the tracked tree, never a held-out case, and says which it left out."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import data_path

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = ("STS_041", "STS_043", "STS_048", "STS_051")


def _carry(tmp_path, limit_mb: int) -> tuple[set, str]:
    data = data_path("sts_ibsi").parent
    env = {**os.environ, "INTERACTIVE_REFINE_DATA": str(data), "SKIP_WHEELS": "1", "ROOT": str(tmp_path),
           "LIMIT_MB": str(limit_mb)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_carry.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {p.name for p in (tmp_path / ".gpu_data" / "sts_ibsi").iterdir()}, done.stdout


def test_training_cases_fit_the_limit_and_the_held_out_ones_stay_home(tmp_path):
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    tracked = sum(os.path.getsize(ROOT / f) for f in listed.stdout.split("\0") if f)
    limit_mb = tracked // 2**20 + 12  # room for a few cases only
    carried, said = _carry(tmp_path, limit_mb)
    available = {p.name for p in data_path("sts_ibsi").iterdir() if p.is_dir()} - set(HOLDOUT)
    assert carried and carried < available  # some cases, not all of them
    assert not carried & set(HOLDOUT)
    size = sum(f.stat().st_size for f in (tmp_path / ".gpu_data").rglob("*") if f.is_file())
    assert tracked + size <= limit_mb * 2**20
    left = said.split("left out for room: ")[1].split(";")[0].split()
    assert set(left) == available - carried  # the message names every case it could not take
    assert "bash scripts/gpu_default_model.sh" in said
