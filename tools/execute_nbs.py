"""Execute chapters in place so that their outputs (tables, plots) are stored for the docs site.

Cells flagged `#| gpu` run only with `--gpu` (on a GPU machine); otherwise they are skipped and keep the
outputs they already have, so GPU results, once produced on the GPU, stay in the committed notebook.
Run `nbdev_clean` afterwards. Usage: `python tools/execute_nbs.py [--gpu] nbs/01_lowrank.ipynb ...`
"""
import argparse, os, re, sys, traceback
from pathlib import Path
import nbformat
from nbclient import NotebookClient

FLAG = re.compile(r'^#\|\s*(gpu|slow)\b', re.M)

def flags(cell) -> set:
    "Test flags (`gpu`, `slow`) of a code cell."
    return set(FLAG.findall(cell.source))

def execute(path:Path, run_flags:set):
    "Execute the notebook at `path` in its folder, skipping cells with flags not in `run_flags`; save in place."
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == 'code' and not (flags(cell) - run_flags): client.execute_cell(cell, i)
    nbformat.write(nb, path)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('notebooks', nargs='+', type=Path)
    ap.add_argument('--gpu', action='store_true', help='also run cells flagged gpu')
    ap.add_argument('--slow', action='store_true', help='also run cells flagged slow')
    a = ap.parse_args()
    if not a.gpu: os.environ.setdefault('TRITON_INTERPRET', '1')
    failed = []
    for p in a.notebooks:
        print(f'executing {p}', flush=True)
        try: execute(p, {f for f in ('gpu', 'slow') if getattr(a, f)})
        except Exception: traceback.print_exc(); failed.append(str(p))  # the notebook is left unchanged
    if failed: sys.exit(f'failed: {" ".join(failed)}')
