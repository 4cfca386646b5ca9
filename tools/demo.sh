#!/usr/bin/env bash
# The main job: set up .venv (idempotent), then run the tiny-lab Fixed Response reproduction
# offline and print its Table 1 analogue. Arguments go to `sft-reverse demo`, e.g.
#   bash tools/demo.sh --task safety        (Table 2 analogue)
#   bash tools/demo.sh --task shakespeare   (Table 3 analogue)
# Artifacts go to sft_reverse_out/demo-<task>/ (or --out DIR); a rerun reuses finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
sft-reverse demo "$@"
