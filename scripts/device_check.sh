#!/usr/bin/env bash
# One prepared run on an accelerator machine: install, tests, benchmarks, bounded training; one JSON of figures.
#   bash scripts/device_check.sh [OUT_DIR]      # OUT_DIR defaults to $OUT, else ./device_check
# Writes OUT_DIR/device_check.json (and the training runs' WAVs and spectrograms under OUT_DIR/train). Everything
# ends within DEVICE_CHECK_SECONDS (default 480) of the start, install included. Environment:
#   DEVICE_CHECK_INSTALL=0     skip `scripts/install.sh gpu` (also skipped when JAX already sees a GPU, e.g. a
#                              machine without network whose own jax has CUDA)
#   DEVICE_CHECK_SECONDS=480   the whole run's wall-clock budget
#   DEVICE_CHECK_DATA=path     the exported data (face2music export_data; default .devdata/data.npz); without it
#                              the training part is skipped and the JSON says so
#   DEVICE_CHECK_SKIP=parts    comma-separated parts not to run (tests, benchmarks, train)
#   DEVICE_CHECK_RUNS=specs    the training runs (default harmonic:small,wavegan:paper)
#   DEVICE_CHECK_TRAIN_ARGS=.. scripts/gpu_train.py's options for them, one string (--stages=DIR --photos=FILE
#                              --set=field=value ...: judged with a CPU run's yardsticks and on a photo set)
# On a machine whose JAX backend is the CPU the device parts (tests, benchmarks, training) are skipped, the JSON
# says so, and the script exits 0; it exits non-zero only if it could not write the JSON, or (2, before anything
# runs) if DEVICE_CHECK_SKIP, DEVICE_CHECK_RUNS or DEVICE_CHECK_TRAIN_ARGS is malformed.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
out="${1:-${OUT:-./device_check}}"
mkdir -p "$out"
install_status="skipped (DEVICE_CHECK_INSTALL=0)"
if [ "${DEVICE_CHECK_INSTALL:-1}" != 0 ]; then
  if [ "$(python -c 'import jax; print(jax.default_backend())' 2>/dev/null)" = gpu ]; then
    install_status="skipped: the installed jax already sees the GPU"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    # The tests need pytest alone of the test extras (the others: torch, chromium, for tests not run here).
    if timeout 150 bash scripts/install.sh gpu >"$out/install.log" 2>&1 && { python -c 'import pytest' 2>/dev/null \
        || python -m pip install --quiet "$(grep -o 'pytest==[0-9.]*' setup.cfg)" >>"$out/install.log" 2>&1; }; then
      install_status="ok: scripts/install.sh gpu"
    else
      install_status="failed: scripts/install.sh gpu (exit $?, see install.log); continuing with the installed jax"
    fi
  else
    install_status="skipped: no NVIDIA GPU (nvidia-smi); on a TPU VM run scripts/install.sh tpu first"
  fi
fi
exec python scripts/device_check.py --out="$out" --start="$start" --seconds="${DEVICE_CHECK_SECONDS:-480}" \
  --install="$install_status" --data="${DEVICE_CHECK_DATA:-.devdata/data.npz}" --skip="${DEVICE_CHECK_SKIP:-}" \
  ${DEVICE_CHECK_RUNS:+--runs="$DEVICE_CHECK_RUNS"} --train_args="${DEVICE_CHECK_TRAIN_ARGS:-}"
