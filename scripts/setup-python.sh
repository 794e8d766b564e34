#!/usr/bin/env bash
# Creates .venv with pycapnp for the Python interop client and test
# (clients/python). Idempotent; prints the interpreter to use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import capnp" 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r clients/python/requirements.txt
fi
echo "$PWD/.venv/bin/python"
