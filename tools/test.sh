#!/usr/bin/env bash
# Set up .venv (idempotent) and run every test:
#   1. sft_reverse/ must be what nbdev_export makes from nbs/ (notebooks are the source),
#      and README.md what tools/readme.py makes from nbs/index.ipynb;
#   2. the tiny lab is built once (or found in data/cache), so what follows shares it;
#   3. every notebook passes nbdev_test (cells flagged slow/cuda are skipped), and pytest tests/ passes
#      (subprocess and packaging checks). These two run side by side, one torch thread per process
#      (SFT_REVERSE_THREADS, NB_WORKERS notebooks at a time): on 2 cores that takes about 2/3 of running them in turn;
#   4. tests/test_demo.py, the main job's command, which renders the demo run that nbs/09 made.
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

echo "== 2. the tiny lab"
python -c "from sft_reverse.tiny import tiny_lab, lab_info; tiny_lab(progress=False); i = lab_info(); print(f\"tiny lab: {i['n_params']} parameters, built in {i['build_seconds']:.0f} s\")"

echo "== 3. notebooks (nbdev_test) and pytest, side by side"
# One thread per process everywhere, from the first torch op on (OMP_NUM_THREADS): several processes that each
# spin up a thread per core contend badly on 2 cores.
export SFT_REVERSE_THREADS="${SFT_REVERSE_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
nb_log=$(mktemp)
nbdev_test --n_workers "${NB_WORKERS:-2}" --timing >"$nb_log" 2>&1 &
nb_pid=$!
set +e
python -m pytest -q tests --ignore=tests/test_demo.py
py_rc=$?
wait "$nb_pid"
nb_rc=$?
echo "== notebooks (nbdev_test), rc=$nb_rc"
cat "$nb_log"; rm -f "$nb_log"
echo "== 4. the main job's command (after the notebooks: it finds their tiny-lab demo done and renders its table)"
python -m pytest -q tests/test_demo.py
demo_rc=$?
set -e
if [ "$nb_rc" -ne 0 ] || [ "$py_rc" -ne 0 ] || [ "$demo_rc" -ne 0 ]; then
  echo "FAIL: nbdev_test exited $nb_rc, pytest exited $py_rc, the demo test exited $demo_rc"
  exit 1
fi
