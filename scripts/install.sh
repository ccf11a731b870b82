#!/usr/bin/env bash
# Installs face2music_jax and everything it needs from the package registries (idempotent).
#   bash scripts/install.sh          # the library and its runtime dependencies
#   bash scripts/install.sh test     # ... plus the test dependencies (pytest, torch for the converter parity test,
#                                    #     Debian's chromium for the listening-page test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
# The SoundFont renderer; --no-deps skips pyaudio (live playback only, needs PortAudio headers to build).
python -m pip install --quiet --disable-pip-version-check --no-deps tinysoundfont==0.3.7
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
