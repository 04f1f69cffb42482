#!/usr/bin/env bash
# Everything the project checks or measures on a GPU, in one go, from the repository root:
# the GPU tests, the notebooks executed with their `#| gpu` cells (outputs stored for the docs), and the
# benchmarks (JSON under bench/results/). Wheels for what the GPU machine lacks (nbdev, IPython kernel) may be
# put in .whl/, made on a connected x86-64 machine with
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --platform any -d .whl \
#       nbdev==2.4.14 'execnb<0.2' 'fastcore<2' 'ghapi<2' ipykernel nbclient nbformat matplotlib-inline
# (then delete the wheels the GPU image already has: setuptools, packaging, typing_extensions, pyyaml, psutil, ...).
# Results and logs are also packed into $OUT/gpu_results.tar (after every step) for machines that return only $OUT.
# Usage: bash bench/run_gpu.sh [tests] [notebooks] [bench]   (default: all three)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/elas_gpu}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site PATH=$PATH:/tmp/site/bin
fi
export ELAS_COMMIT=${ELAS_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
steps=${*:-tests notebooks bench}
status=0
pack() { tar cf "$OUT/gpu_results.tar" bench/results nbs/*.ipynb; }  # after every step: a call cut off by its time limit keeps the rest
run() { echo "== $*"; "$@" 2>&1 | tee -a "$OUT/gpu.log"; [ "${PIPESTATUS[0]}" = 0 ] || { echo "FAILED: $*" | tee -a "$OUT/gpu.log"; status=1; }; pack; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.log"
case " $steps " in *" tests "*) run python3 -m pytest -q -p no:cacheprovider tests/ -k gpu ;; esac
case " $steps " in *" notebooks "*) run python3 tools/execute_nbs.py --gpu $(grep -l '#| gpu' nbs/*.ipynb) ;; esac
if [[ " $steps " == *" bench "* ]]; then
  # alone on the machine: speed rows measured beside another job are host-bound (see the train.json rows' `beside` field)
  for b in prune sparse_gemm ffn profile_step train loro_exact loro_core memory inference; do [ -f bench/$b.py ] && run python3 bench/$b.py; done
fi
pack
exit $status
