"""Data-parallel training on CPU: two gloo processes train like one process at the same global batch; the test's subprocess
ends, whole, however long it takes."""
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


def machine_timeout(seconds:float, processes:int=2) -> float:
    "`seconds` on an idle machine with a core per process, scaled up by the load and by fewer cores."
    cores = os.cpu_count() or 1
    return seconds * max(1.0, (os.getloadavg()[0] + processes) / cores)


def run_group(cmd:list, timeout:float, **kwargs) -> subprocess.CompletedProcess:
    "Run `cmd` in a process group of its own; on timeout kill the whole group (torchrun and its workers too), then raise."
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try: out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_ddp_two_gloo_processes_match_one(tmp_path):
    "bench/ddp_check.py: torchrun with 1 and 2 CPU processes, 6 steps of a tiny ELAS model (2:4 on from step 3)."
    run = run_group([sys.executable, 'bench/ddp_check.py', '--out', str(tmp_path)], machine_timeout(120), cwd=ROOT,
                    env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert 'max relative loss difference' in run.stdout


def gone(pid:int) -> bool:
    "Whether process `pid` has ended (a zombie waiting for its parent counts as ended)."
    try: os.kill(pid, 0)
    except ProcessLookupError: return True
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z'
    except (FileNotFoundError, ProcessLookupError): return True


def test_timeout_kills_the_whole_group(tmp_path):
    "A command that outlives its timeout is killed with every process it started, as torchrun's workers would be."
    started = tmp_path/'grandchild'
    child = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
             f"open({str(started)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired): run_group([sys.executable, '-c', child], timeout=5)
    assert time.monotonic() - t < 30 and started.exists()
    grandchild = int(started.read_text())
    deadline = time.monotonic() + 10
    while not gone(grandchild) and time.monotonic() < deadline: time.sleep(0.1)
    assert gone(grandchild)
    assert machine_timeout(120) >= 120
