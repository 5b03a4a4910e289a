#!/usr/bin/env bash
# The pure-JAX step on one GPU against gensim on every CPU core of the same machine.
#
#   bash bench/gpu.sh                          # GPU machine, the repo's .venv: under 5 minutes
#   bash bench/gpu.sh --install                # first pip-installs jax[cuda12] into that venv
#   JAX_PLATFORMS=cpu bash bench/gpu.sh --quick   # smoke test anywhere: 1 epoch, 1 seed, ~2 min
#
# Prints `nvidia-smi -L` and JAX's devices, then trains sg-ns, sg-hs and cbow-ns on the default
# corpus (wiki-sample, 453k tokens; 5 epochs, 3 seeds) with the pure-JAX step (--update sparse,
# the batch shape the device picks: step.device_defaults, B=16384 x 16 steps per call on GPU),
# and gensim with workers = all cores, same hyperparameters (bench/vs_gensim.py). The table has
# words/s (training loop, XLA compilation included), WordSim-353, SimLex-999 and analogy
# accuracy per system, and the words/s ratio from that one command.
#
# Installs nothing unless --install is given (then only jax[cuda12], which needs the network).
# PYTHON=path overrides the interpreter (default: the repo's .venv/bin/python).
#
# Then, where JAX sees GPUs, the sharded step (bench/sharding.py --platform gpu) on 1 and on all.
#
# Status: written and smoke-tested on CPU only (JAX_PLATFORMS=cpu ... --quick). Not run on a GPU:
# no GPU was lent to the session that wrote it, so there are no GPU figures in BENCHMARKS.md yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
epochs=5
repeats=3
for arg in "$@"; do
  case "$arg" in
    --install) "$PYTHON" -m pip install -q -U "jax[cuda12]" ;;
    --quick) epochs=1; repeats=1 ;;
    *) echo "usage: bash bench/gpu.sh [--install] [--quick]" >&2; exit 2 ;;
  esac
done

echo "== nvidia-smi -L"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi: no NVIDIA GPU visible)"
echo "== JAX"
"$PYTHON" -c 'import jax; print(jax.__version__, jax.default_backend(), jax.devices())'
echo "== w2v_jax (pure-JAX step) vs gensim (workers=$(nproc)), wiki-sample, $epochs epoch(s)"
"$PYTHON" bench/vs_gensim.py --variants sg-ns,sg-hs,cbow-ns --update sparse \
  --epochs "$epochs" --repeats "$repeats" --workers "$(nproc)"

# The sharded step on this machine's GPUs (split by dimensions, the trainer's default), against
# the one-device step in the same command: on one GPU it shows that the path compiles and runs
# there; with several it is the scaling figure docs/scaling.md projects. Skipped without a GPU.
ngpu=$("$PYTHON" -c 'import jax; print(sum(d.platform == "gpu" for d in jax.devices()))' \
  2>/dev/null || echo 0)
if [ "$ngpu" -ge 1 ]; then
  echo "== the sharded step, tables split by dimensions, on 1..$ngpu GPU(s)"
  counts=1; [ "$ngpu" -gt 1 ] && counts="1 $ngpu"
  # shellcheck disable=SC2086
  "$PYTHON" bench/sharding.py --platform gpu --devices $counts --baseline --repeats 3
fi
