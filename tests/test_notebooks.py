"""Run every chapter in `nbs/` as a test, the way `nbdev_test` does, so CI gets one pytest summary."""
import pytest
import nbdev.test as nbt
from nbdev.config import get_config

cfg = get_config()
NOTEBOOKS = sorted(p for p in cfg.nbs_path.glob('*.ipynb') if not p.name.startswith('_'))


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb, request):
    run = set(request.config.getoption('--flags').split())
    skip = [f for f in cfg.tst_flags.split() if f and f not in run]
    ok, _ = nbt.test_nb(nb, skip_flags=skip, force_flags=list(run))
    assert ok, f'{nb.name} failed: its traceback is printed above'
