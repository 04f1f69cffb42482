"""The install as a user gets it: `elas_nb` imports and trains on a CPU without Triton, and the runtime requirements hold no
notebook packages."""
import os, re, shlex, subprocess, sys
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WITHOUT_TRITON = """
import importlib.abc, os, sys
class NoTriton(importlib.abc.MetaPathFinder):
    "Triton made unimportable, as where it is not installed."
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] == 'triton': raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTriton())

import importlib, pkgutil, torch, elas_nb
mods = [m.name for m in pkgutil.iter_modules(elas_nb.__path__) if not m.name.startswith('_')]
for m in mods: importlib.import_module(f'elas_nb.{m}')
from elas_nb.kernels import HAS_TRITON, relu2_prune_compress
from elas_nb.config import recipe
from elas_nb.train import train
assert not HAS_TRITON
rec = recipe('tiny', 'elas', steps=4, batch_size=4, seq_len=32, warmup=1, sparse_warmup=2, exact_every=2, eval_every=4, eval_tokens=256)
res = train(rec, out=sys.argv[1], progress=False, log_every=2)
assert sorted(res['losses']) == [1, 2, 3, 4] and 'triton' not in sys.modules
os.environ['TRITON_INTERPRET'] = '1'
try: relu2_prune_compress(torch.zeros(4, 8))
except ModuleNotFoundError as e: print(e)
print('imported', ', '.join(mods))
"""


def test_import_and_train_without_triton(tmp_path):
    "`import elas_nb`, every module, and a few CPU training steps with Triton unimportable; a kernel launch names what is missing."
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    run = subprocess.run([sys.executable, '-c', WITHOUT_TRITON, str(tmp_path/'run')], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0].startswith('Triton is not installed: the Triton kernels need it')
    assert 'imported checkpoint, cli, config, convert, data, ffn, kernels, loro, lowrank, model, relu2, runlog, sparse24, sparse_gemm, train' in run.stdout


def test_runtime_requirements():
    "What `pip install elas_nb` pulls in: what training needs; notebooks, TensorBoard and Triton are extras or come with PyTorch."
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    names = lambda key: {re.match(r'[\w.-]+', r).group() for r in shlex.split(cfg['DEFAULT'][key])}
    runtime = names('requirements')
    assert runtime == {'torch', 'numpy', 'matplotlib', 'tokenizers', 'datasets', 'tqdm', 'safetensors', 'fastcore'}, runtime
    assert {'jupyterlab', 'ipywidgets'} <= names('notebook_requirements')
