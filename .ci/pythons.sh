#!/usr/bin/env bash
# Prints `PYENV_VERSION=...` selecting, beside pyenv's current version, the newest installed
# release of each Python in noxfile.py's PYTHONS: pyenv's python3.X shims answer only for selected
# versions, and `make test-pythons` (nox) finds interpreters by those names. Prints
# `PYENV_VERSION=` unchanged where pyenv is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pyenv >/dev/null; then
    echo "PYENV_VERSION=${PYENV_VERSION:-}"
    exit 0
fi
selected=$(pyenv version-name)
for version in $(sed -n 's/^PYTHONS = \[\(.*\)\]$/\1/p' noxfile.py | tr -d '",'); do
    installed=$(pyenv versions --bare | grep -E "^${version//./\\.}\.[0-9]+$" | sort -V | tail -n 1 || true)
    if [ -n "$installed" ]; then selected="$selected:$installed"; fi
done
echo "PYENV_VERSION=$selected"
