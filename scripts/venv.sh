#!/usr/bin/env bash
# Creates (or reuses) .venv with the pinned Python test tools of tests/contract/requirements.txt
# and prints its bin directory. Reinstalls only when the requirements changed.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=tests/contract/requirements.txt
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv >&2
fi
stamp=.venv/requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -r "$requirements" >&2
    echo "$want" > "$stamp"
fi
echo "$PWD/.venv/bin"
