#!/usr/bin/env bash
# Install the SDK into a fresh virtual environment without torch (versions pinned from the repo's lock)
# and run its tests there against a real server (run by the repo's .venv, which has the model stack).
#   clients/python/tests/run_isolated.sh [pytest args...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
lock="$repo/requirements/lock-cpu.txt"
pin() { grep -iE "^$1==" "$lock" | head -1; }
venv="$(mktemp -d /tmp/lorat-sdk-venv.XXXXXX)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
# --no-deps + explicit pins: pip never resolves anything, so nothing (torch above all) sneaks in.
"$venv/bin/pip" install -q --no-deps \
  "$(pin grpcio)" "$(pin protobuf)" "$(pin numpy)" "$(pin av)" "$(pin setuptools)" \
  "$(pin typing_extensions)" "$(pin pytest)" "$(pin pluggy)" "$(pin iniconfig)" "$(pin packaging)" "$(pin Pygments)"
"$venv/bin/pip" install -q --no-deps --no-build-isolation "$repo/clients/python"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch is importable in the SDK venv: isolation broken" >&2; exit 1
fi
"$venv/bin/pip" check
export LORAT_SERVER_PYTHON="${LORAT_SERVER_PYTHON:-$repo/.venv/bin/python}"
cd "$venv"  # import the installed SDK, not the source tree
"$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$here" -c /dev/null "$here" "$@"
