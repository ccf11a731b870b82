#!/usr/bin/env bash
# Installs face2music_jax and everything it needs from the package registries (idempotent).
#   bash scripts/install.sh          # the library and its runtime dependencies
#   bash scripts/install.sh test     # ... plus the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
# The SoundFont renderer; --no-deps skips pyaudio (live playback only, needs PortAudio headers to build).
python -m pip install --quiet --disable-pip-version-check --no-deps tinysoundfont==0.3.7
