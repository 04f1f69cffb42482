"""Process the chapters for the docs site as `nbdev_docs` does before Quarto (which is not installable
offline), check that the sidebar of `_quarto.yml` names exactly the chapters, and that README.md is the one
`index.ipynb` renders to."""
import sys, yaml
from nbdev.config import get_config
from nbdev.doclinks import _build_modidx
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs
from readme import render_readme

cfg = get_config()

def sidebar_files(entries):
    for e in entries:
        if isinstance(e, str): yield e
        else: yield from sidebar_files(e.get('contents', []))

refresh_quarto_yml()
_build_modidx()
cache = proc_nbs(cfg.nbs_path, n_workers=0, force=True)
site = yaml.safe_load((cfg.config_path/'_quarto.yml').read_text())
listed = set(sidebar_files(site['website']['sidebar']['contents']))
chapters = {p.name for p in cfg.nbs_path.glob('*.ipynb') if not p.name.startswith('_')}
problems = [f'{f} is in the sidebar but not in nbs/' for f in sorted(listed - chapters)]
problems += [f'{f} is missing from the sidebar' for f in sorted(chapters - listed)]
problems += [f'{f} was not processed' for f in sorted(chapters) if not (cache/f).exists()]
if render_readme(cache/cfg.readme_nb) != (cfg.config_path/'README.md').read_text():
    problems.append('README.md is stale: run `python .ci/readme.py`')
if problems: sys.exit('\n'.join(problems))
print(f'processed {len(chapters)} chapters for the docs; sidebar and README agree')
