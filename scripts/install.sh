#!/usr/bin/env bash
# Installs face2music_jax and everything it needs from the package registries (idempotent).
#   bash scripts/install.sh           # the library and its runtime dependencies (CPU jax)
#   bash scripts/install.sh test      # ... plus the test dependencies (pytest, torch for the converter parity test,
#                                     #     Debian's chromium for the listening-page test)
#   bash scripts/install.sh gpu       # ... plus the CUDA 12 plugin of the pinned jax (NVIDIA GPUs; the CUDA
#                                     #     libraries come as pip wheels, only an NVIDIA driver is needed)
#   bash scripts/install.sh gpu test  # both
#   bash scripts/install.sh tpu       # ... plus libtpu of the pinned jax (TPU VMs)
# Check: python -c "import jax; print(jax.devices())"
set -euo pipefail
cd "$(dirname "$0")/.."
test_deps=0
accelerator=""
for arg in "$@"; do
  case "$arg" in
    test) test_deps=1 ;;
    gpu) accelerator="cuda12" ;;
    tpu) accelerator="tpu" ;;
    *) echo "Unknown argument '$arg'; expected 'test' and/or one of 'gpu', 'tpu'." >&2; exit 2 ;;
  esac
done
pip_install() { python -m pip install --quiet --disable-pip-version-check "$@"; }
extras=""
[ "$test_deps" = 1 ] && extras="[test]"
pip_install -e ".${extras}"
# The SoundFont renderer; --no-deps skips pyaudio (live playback only, needs PortAudio headers to build).
pip_install --no-deps tinysoundfont==0.3.7
if [ -n "$accelerator" ]; then
  # The plugin (or libtpu) must match jax exactly: read the pin (jax[cpu]==X in setup.cfg) rather than repeat it.
  jax_version=$(sed -n 's/^ *jax\[cpu\]==\([0-9.]*\) *$/\1/p' setup.cfg)
  [ -n "$jax_version" ] || { echo "No jax[cpu]==<version> pin found in setup.cfg." >&2; exit 1; }
  pip_install "jax[${accelerator}]==${jax_version}"
fi
if [ "$test_deps" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
