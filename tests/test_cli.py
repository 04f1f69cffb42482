"""`elas-train` as a user runs it: the console-script entry point in a subprocess, parsing real arguments."""
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# What `pip install` writes as the `elas-train` console script (setuptools' template for `elas_nb.cli:elas_train`).
CONSOLE_SCRIPT = """import re, sys
from elas_nb.cli import elas_train
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(elas_train())
"""


def elas_train(*args, cwd):
    "Run `elas-train ARGS` in `cwd` through the console-script entry point."
    script = Path(cwd)/'elas-train'
    script.write_text(CONSOLE_SCRIPT)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_default_job_shortened(tmp_path):
    "The default job (tiny ELAS, embedded corpus, CPU) cut to 20 steps prints its perplexity and writes its curve."
    run = elas_train('--steps', '20', '--eval_every', '10', '--quiet', cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'final validation perplexity' in run.stdout
    png = next(l.split(': ', 1)[1] for l in run.stdout.splitlines() if l.startswith('curves: '))
    assert (tmp_path/png).exists() and png == 'runs/tiny-elas/curves.png'
    again = elas_train('--steps', '30', '--eval_every', '10', '--quiet', '--resume', cwd=tmp_path)  # extend the run
    assert again.returncode == 0, again.stderr[-3000:]
    assert [l.split(',')[0] for l in (tmp_path/'runs/tiny-elas/log.csv').read_text().splitlines()[1:]] == ['10', '20', '30']


def test_bad_arguments(tmp_path):
    assert 'valid: tiny, 60m, 130m, 350m, 1b' in elas_train('--size', '7b', cwd=tmp_path).stderr
    assert elas_train('--batch_size', 'x', cwd=tmp_path).returncode == 2
    r = elas_train('--data', 'c4', cwd=tmp_path)
    assert r.returncode == 1 and "data='embedded'" in r.stderr
