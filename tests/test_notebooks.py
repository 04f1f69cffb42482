"""Run every chapter in `nbs/` as a test, the way `nbdev_test` does, so CI gets one pytest summary.

Each notebook runs in its own Python process, as under `nbdev_test`: a chapter redefines what it exports (the sparse GEMM
chapter re-registers its `torch.library` operators, for example), which must not leak into the other tests."""
import json, os, subprocess, sys
import pytest
from nbdev.config import get_config

cfg = get_config()
NOTEBOOKS = sorted(p for p in cfg.nbs_path.glob('*.ipynb') if not p.name.startswith('_'))
RUN = """import sys, json, pathlib, nbdev.test as nbt
ok, _ = nbt.test_nb(pathlib.Path(sys.argv[1]), skip_flags=json.loads(sys.argv[2]), force_flags=json.loads(sys.argv[3]))
sys.exit(0 if ok else 1)"""


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb, request):
    run = set(request.config.getoption('--flags').split())
    skip = [f for f in cfg.tst_flags.split() if f and f not in run]
    res = subprocess.run([sys.executable, '-c', RUN, str(nb), json.dumps(skip), json.dumps(sorted(run))],
                         capture_output=True, text=True, cwd=cfg.config_path, env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert res.returncode == 0, f'{nb.name} failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}'
