#!/usr/bin/env bash
# The GPU checks, for a CUDA machine whose python3 already has torch, transformers, accelerate, safetensors and pytest
# (no network needed; carry data/cache/tiny_lab to skip the tiny lab's build):
#   1. tests/test_mixed_precision.py on CUDA (bf16 and fp16 autocast against float32, in SFT, LCDD and the trigger);
#   2. a small tiny-lab run end to end on CUDA with bf16 autocast;
#   3. `sft-reverse bench` on the Qwen3-0.6B shape (bf16), on 8 layers of the Llama-3.1-8B shape (bf16), and on the
#      Qwen3-0.6B shape in float32 with bf16 autocast.
# Everything lands in ${OUT:-gpu_out}: logs and the bench JSON files.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}; mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
py=${PYTHON:-python3}
t0=$(date +%s); stamp() { echo "[gpu_check] $1 at $(( $(date +%s) - t0 )) s"; }
$py -c "import torch, transformers, accelerate; print('torch', torch.__version__, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '|', torch.cuda.get_device_name())"

stamp "1. mixed precision tests"
timeout 200 $py -m pytest -q -s -p no:cacheprovider tests/test_mixed_precision.py 2>&1 | grep -v Warning | tee "$out/mixed_precision.log"

stamp "2. tiny-lab run on CUDA, bf16 autocast"
cat > "$out/tiny_cuda.yaml" <<YAML
task: fixed_response
n_train: 96
n_eval: 16
device: cuda
mixed_precision: bf16
out_dir: /tmp/tiny_cuda
sft: {max_steps: 60, batch_size: 16}
lcdd: {max_steps: 150, warmup_steps: 40, check_every: 10}
trigger: {steps: 150, n_prompts: 32}
utility: {facts: {limit: 40}}
YAML
timeout 150 $py -m sft_reverse.experiment run "$out/tiny_cuda.yaml" --quiet 2>&1 | tail -25 | tee "$out/tiny_cuda.log"

b() { local name=$1 limit=$2; shift 2; stamp "3. bench $name"
      timeout "$limit" $py -m sft_reverse.experiment bench --device cuda --quiet --json "$out/bench_$name.json" "$@" 2>&1 | tee "$out/bench_$name.md"; }
b qwen3-0.6b_bf16 150 --shape Qwen/Qwen3-0.6B --dtype bfloat16
b llama8b-8layers_bf16 180 --shape meta-llama/Llama-3.1-8B --layers 8 --dtype bfloat16
b qwen3-0.6b_fp32-autocast-bf16 150 --shape Qwen/Qwen3-0.6B --dtype float32 --mixed-precision bf16
stamp "done"
