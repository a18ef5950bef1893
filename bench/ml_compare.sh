#!/usr/bin/env bash
# Kairos's learners beside LightGBM and scikit-learn on the same data, split and threads.
# Installs the peers from PyPI into bench/.venv, builds the Kairos side, runs
# bench/ml_compare.py and keeps the raw results in bench/ml_compare.json.
#
#   bench/ml_compare.sh [--rows 1000000] [--threads 2] [--skip-synthetic]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install -q --disable-pip-version-check lightgbm scikit-learn numpy pandas
bench/.venv/bin/pip install -q --disable-pip-version-check --no-deps islp
cargo build --release -q -p kairos-ml --example compare
exec bench/.venv/bin/python bench/ml_compare.py --out bench/ml_compare.json "$@"
