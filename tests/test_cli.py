"""`elas-train` as a user runs it: the console-script entry point in a subprocess, parsing real arguments."""
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


# What `pip install` writes as the `elas-train` console script (setuptools' template for `elas_nb.cli:elas_train`).
CONSOLE_SCRIPT = """import re, sys
from elas_nb.cli import elas_train
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(elas_train())
"""


def elas_train(*args, cwd, popen=False):
    "Run `elas-train ARGS` in `cwd` through the console-script entry point (or start it, with `popen`)."
    script = Path(cwd)/'elas-train'
    script.write_text(CONSOLE_SCRIPT)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    if popen: return subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_default_job_shortened(tmp_path):
    "The default job (tiny ELAS, embedded corpus, CPU) cut to 20 steps prints its perplexity and writes its curve."
    run = elas_train('--steps', '20', '--eval_every', '10', '--quiet', cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'final validation perplexity' in run.stdout
    png = next(l.split(': ', 1)[1] for l in run.stdout.splitlines() if l.startswith('curves: '))
    assert (tmp_path/png).exists() and png == 'runs/tiny-elas/curves.png'
    again = elas_train('--steps', '30', '--quiet', '--resume', cwd=tmp_path)  # extend the run
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith('resuming from runs/tiny-elas/checkpoints/step_0000020, --steps 20 → 30\n')
    assert [l.split(',')[0] for l in (tmp_path/'runs/tiny-elas/log.csv').read_text().splitlines()[1:]] == ['10', '20', '30']


@pytest.mark.parametrize('args, message', [
    (('--size', '7b'), "--size must be one of tiny, 60m, 130m, 350m, 1b, got '7b'"),
    (('--batch_size', '-4'), '--batch_size must be an integer >= 1, got -4'),
    (('--micro_batch', '0'), '--micro_batch must be an integer >= 1, got 0'),
    (('--device', 'tpu'), "--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (('--log_every', '0', '--out', 'run'), '--log_every must be an integer >= 1, got 0')])
def test_bad_arguments(tmp_path, args, message):
    "A bad flag: a non-zero exit, one line on stderr that names it, no traceback, nothing written."
    run = elas_train(*args, cwd=tmp_path)
    assert run.returncode == 1 and run.stderr == f'elas-train: error: {message}\n', run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['elas-train']


def test_argparse_and_offline_errors(tmp_path):
    assert elas_train('--batch_size', 'x', cwd=tmp_path).returncode == 2
    r = elas_train('--data', 'c4', cwd=tmp_path)
    assert r.returncode == 1 and "data='embedded'" in r.stderr and 'Traceback' not in r.stderr


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    "Ctrl-C during training: the step ends, a checkpoint is written, and the last line gives the command that resumes."
    proc = elas_train('--steps', '5000', '--eval_every', '1000', '--log_every', '1', '--quiet', '--out', 'run', cwd=tmp_path, popen=True)
    log, deadline = tmp_path/'run'/'log.csv', time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) > 2):  # the header and two rows: training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    last = err.strip().splitlines()[-1]
    step = int(last.removeprefix('elas-train: interrupted at step ').split()[0])
    assert proc.returncode == 130, err
    assert last == (f'elas-train: interrupted at step {step} of 5000, checkpoint run/checkpoints/step_{step:07d} saved; continue with: '
                    'elas-train --steps 5000 --eval_every 1000 --out run --log_every 1 --quiet --resume')
    assert (tmp_path/'run/checkpoints/latest').read_text() == f'step_{step:07d}' and 'Traceback' not in err


def test_every_recipe_field_is_a_flag():
    "Introspection: each Recipe field has --field and --field-with-dashes, its comment as help; both spellings parse alike."
    from dataclasses import fields
    from fastcore.docments import docments
    from elas_nb.cli import cli_parser
    from elas_nb.config import Recipe
    parser = cli_parser()
    actions = {a.dest: a for a in parser._actions}
    for f in fields(Recipe):
        names = [f'--{f.name}'] + ([f"--{f.name.replace('_', '-')}"] if '_' in f.name else [])
        assert actions[f.name].option_strings == names
        if f.name not in ('size', 'variant'):  # the command's own, with its defaults tiny and elas
            assert actions[f.name].help == docments(Recipe)[f.name].replace('%', '%%') + " (default: the recipe's)"
    dashed = ['--exact-every', '7', '--weight-decay', '0.1', '--grad-clip', '1', '--eval-tokens', 'none', '--paper-width', '--show-recipe',
              '--log-every', '3', '--kernel', 'dense']
    underscored = ['--' + a[2:].replace('-', '_') if a.startswith('--') else a for a in dashed]
    assert vars(parser.parse_args(dashed)) == vars(parser.parse_args(underscored))
    parsed = vars(parser.parse_args(dashed))
    assert (parsed['exact_every'], parsed['weight_decay'], parsed['eval_tokens'], parsed['paper_width'], parsed['kernel']) == (7, 0.1, None, True, 'dense')
    assert 'warmup' not in vars(parser.parse_args([]))  # not given: the recipe's value


def test_show_recipe(tmp_path):
    "--show-recipe prints the resolved settings of a size × variant, the flags given included, and trains nothing."
    run = elas_train('--size', '130m', '--variant', 'cola', '--weight-decay', '0.05', '--schedule', 'cosine_restart', '--show-recipe',
                     '--device', 'cpu', cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[:3] == ['--size          130m', '--variant       cola', '--optimizer     adamw']
    assert '--weight_decay  0.05' in lines and '--schedule      cosine_restart' in lines and '--micro_batch   4' in lines
    assert lines[-3].startswith('model: 130m cola (cola linears of rank 256, swiglu FFN of width 2048)')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['elas-train']
    bad = elas_train('--kernel', 'fast', '--show-recipe', cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr == "elas-train: error: --kernel must be one of auto, sparse, dense, got 'fast'\n"
