"""What every benchmark script shares: the provenance stored with its results and the two ways it times GPU work.
The scripts run as `python bench/NAME.py` from the repository root, so they import this as `common`."""
import datetime, os, subprocess
import torch
import triton
from triton.testing import do_bench

PEAK_TFLOPS = 989.0  # H200 dense bf16 datasheet peak: the MFU denominator (as in nanoGPT and torchtitan's MFU)


def git_commit() -> str:
    "$ELAS_COMMIT (set it where the tree was copied to another machine, whose git may be stale), else the checked-out commit."
    if os.environ.get('ELAS_COMMIT'): return os.environ['ELAS_COMMIT']
    try: return subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError): return 'unknown'


def meta(**extra) -> dict:
    "GPU, library versions, commit and UTC date of this run, plus `extra` fields."
    return dict(gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (CPU)', torch=torch.__version__, triton=triton.__version__,
                cusparselt=torch.backends.cusparselt.version(), commit=git_commit(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), **extra)


def graphed(fn, reset=None, warmups:int=1):
    """`fn` captured in a CUDA graph, after `warmups` runs on a side stream (cuBLAS and cuSPARSELt set up); `reset()`, if given,
    then undoes what those runs changed. Returns the graph's replay."""
    side = torch.cuda.Stream(); side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups): fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph): fn()
    if reset is not None: reset()
    return graph.replay


def gpu_ms(fn) -> float:
    "Median GPU time of one call of `fn` (L2 flushed between calls)."
    return do_bench(fn, warmup=25, rep=100, return_mode='median')
