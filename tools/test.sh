#!/usr/bin/env bash
# Set up .venv (idempotent) and run every test:
#   1. sft_reverse/ must be what nbdev_export makes from nbs/ (notebooks are the source),
#      and README.md what tools/readme.py makes from nbs/index.ipynb;
#   2. every notebook passes nbdev_test (cells flagged slow/cuda are skipped);
#   3. pytest tests/ (subprocess and packaging checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== 1. sft_reverse/ in sync with nbs/"
snap=$(mktemp -d); trap 'rm -rf "$snap"' EXIT
cp -r sft_reverse "$snap/lib"
nbdev_export
if ! diff -r -x __pycache__ "$snap/lib" sft_reverse; then
  echo "FAIL: sft_reverse/ was out of sync with nbs/ (nbdev_export changed it). Edit the notebooks, run nbdev_export, commit both."
  exit 1
fi
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git status --porcelain -- sft_reverse)" ]; then
  git status --porcelain -- sft_reverse
  echo "FAIL: sft_reverse/ differs from what is committed. Run nbdev_export and commit the result."
  exit 1
fi

python tools/readme.py --check

echo "== 2. notebooks (nbdev_test)"
nbdev_test --n_workers "${NB_WORKERS:-1}" --timing

echo "== 3. pytest"
python -m pytest -q tests
