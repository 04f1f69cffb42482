"""pytest setup shared by the notebook runner and the plain tests.

Without a GPU the Triton kernels run in the interpreter, which must be switched on before any kernel is
defined, so it is set here, before a test module imports `elas_nb`.
"""
import os

os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import torch
from hypothesis import settings

if not torch.cuda.is_available(): os.environ.setdefault('TRITON_INTERPRET', '1')

# CI explores the same examples on every run, so a red build always means a change, never a new random draw.
settings.register_profile('ci', derandomize=True, deadline=None, print_blob=True)
if os.environ.get('CI'): settings.load_profile('ci')


def pytest_addoption(parser):
    parser.addoption('--flags', default='', help="space-separated nbdev test flags to run (e.g. 'gpu slow')")
