"""pytest setup shared by the notebook runner and the plain tests.

Without a GPU the Triton kernels run in the interpreter, which must be switched on before any kernel is
defined, so it is set here, before a test module imports `elas_nb`.
"""
import os

os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import torch

if not torch.cuda.is_available(): os.environ.setdefault('TRITON_INTERPRET', '1')


def pytest_addoption(parser):
    parser.addoption('--flags', default='', help="space-separated nbdev test flags to run (e.g. 'gpu slow')")
