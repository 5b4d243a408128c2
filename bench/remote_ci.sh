#!/usr/bin/env bash
# What tests/remote_test.py adds to CI (issue 20): a cold BuildGrid venv (no pip cache, in a
# temporary directory: the checkout's .venv-buildgrid is left alone) and the test itself.
# Run from the checkout, after README's install: bash bench/remote_ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py313=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.13*/bin/python3 2>/dev/null | tail -n 1)
echo "load: $(uptime)"
start=$(date +%s%N)
"$py313" -m venv "$tmp/venv" && "$tmp/venv/bin/pip" install -q --no-cache-dir 'buildgrid==0.9.1' 2>/dev/null
echo "BuildGrid venv, cold: $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "load: $(uptime)"
start=$(date +%s%N)
.venv/bin/python -m pytest -q tests/remote_test.py | tail -n 1
echo "tests/remote_test.py: $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "load: $(uptime)"
