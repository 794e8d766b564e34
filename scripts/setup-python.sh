#!/usr/bin/env bash
# Creates .venv for the Python clients (clients/python): pycapnp for the
# interop example log_client.py, the log-server-client package installed as
# a user installs it (`pip install ./clients/python`, a regular install, so
# the tests see what a user gets, shipped schema files included), pytest,
# and the OpenTelemetry SDK with its OTLP/gRPC exporter and logging handler
# for the interop test otel_log.py (clients/python/requirements-otel.txt).
# Idempotent; prints the interpreter to use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
pip=(.venv/bin/pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import capnp" 2>/dev/null; then
    "${pip[@]}" -r clients/python/requirements.txt
fi
if ! .venv/bin/python -c "import pytest" 2>/dev/null; then
    "${pip[@]}" -r clients/python/requirements-test.txt
fi
# The pins may have changed since the last run: pip checks them quickly.
"${pip[@]}" -r clients/python/requirements-otel.txt >&2
# Every time: the package may have changed since the last run. Without
# --force-reinstall pip keeps an installed copy of the same version.
"${pip[@]}" --force-reinstall --no-deps ./clients/python >&2
echo "$PWD/.venv/bin/python"
