"""Data-parallel training on CPU: two gloo processes train like one process at the same global batch."""
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ddp_two_gloo_processes_match_one(tmp_path):
    "bench/ddp_check.py: torchrun with 1 and 2 CPU processes, 6 steps of a tiny ELAS model (2:4 on from step 3)."
    run = subprocess.run([sys.executable, 'bench/ddp_check.py', '--out', str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert 'max relative loss difference' in run.stdout
