#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job, offline.
# Until the tiny-lab demo exists (sft-reverse demo), the main job executes the carrier
# walkthrough notebook with papermill; the executed copy goes to $OUT (default sft_reverse_out/walkthrough).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=${OUT:-sft_reverse_out/walkthrough}
mkdir -p "$out"
for nb in 00_gates 01_delta 02_carrier; do
  papermill --progress-bar --cwd nbs "nbs/$nb.ipynb" "$out/$nb.ipynb"
done
echo "Executed notebooks written to $out/"
