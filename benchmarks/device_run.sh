#!/usr/bin/env bash
# The full benchmark suite on a lent accelerator machine, in one call.
#
#   bash benchmarks/device_run.sh            # writes $OUT/bench.json and $OUT/log.txt
#
# The machine has JAX, torch, optax, chex, … preinstalled but not gdjax (run from
# src/ via PYTHONPATH) nor PyHessian (a wheel in .whl/, carried with the call).
# --keep-going records a failing section as an error row and goes on; run.py
# rewrites the JSON after every section, so a run cut short keeps what it measured.
set -u
OUT=${OUT:-/tmp/gdjax-device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi -L
  python3 -c "import jax, jaxlib, torch, optax; print('jax', jax.__version__, 'jaxlib', \
jaxlib.__version__, 'torch', torch.__version__, 'optax', optax.__version__, jax.devices())"
  timeout "${BENCH_TIMEOUT:-520}" python3 benchmarks/run.py --keep-going \
    --sections "${SECTIONS:-roofline,sweeps,curvature,steps,memory,fit,training}" \
    --out "$OUT/bench.json"
  echo "run.py exit: $?"
} 2>&1 | tee "$OUT/log.txt"
