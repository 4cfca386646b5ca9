#!/usr/bin/env bash
# The GPU checks, for a CUDA machine whose python3 already has torch, transformers, accelerate, safetensors and pytest
# (no network needed; carry data/cache/tiny_lab to skip the tiny lab's build, and a fastcore wheel in .whl if python3
# lacks it). Steps in order of what issue 15 asks for, each under its own timeout, and each skipped when less than its
# timeout is left of BUDGET seconds (default 540, inside one 10-minute device call). The output folder holds about 15
# files: a device call that returns at most 8 should tar it.
#   1. exactness (tests/test_exactness.py: MaskedLinearFn against autograd, the layer builds against MaskedLinearFn,
#      float64 gradchecks, the frozen cache; tests/test_graphs.py: the CUDA-graphed model build against the layer
#      builds over several steps, the fused kernels included, which compile on first use) on CUDA;
#   2. tools/step_variants.py on the Qwen3-0.6B shape and on 8 layers of the 8B shape, in one process each: the LCDD
#      step (graphed), with each option (early sync, aliased gradients, fused kernels, all three; on 0.6B also the graphs
#      in 4 chunks of layers and one per layer), with the layer builds,
#      without either, an ungated W + dW, and full SFT (eager, early sync, and on 0.6B compiled);
#   3. `sft-reverse bench` (step ratios and peak memory, the theta store's too) at batch 8 x 256 on the Qwen3-0.6B shape
#      and on 8 layers of the Llama-3.1-8B shape, bf16;
#   4. kernels per step from the profiler (tools/profile_step.py), LCDD against full SFT, Qwen3-0.6B shape, bf16;
#   5. step_variants again with SFT compiled (the run before step 2 timed it too);
#   6. the same benches at 8 x 1024, and the Qwen3-0.6B shape in float32 with bf16 autocast;
#   7. mixed precision (tests/test_mixed_precision.py) and a small tiny-lab run end to end on CUDA with bf16 autocast.
# Everything lands in ${OUT:-gpu_out}: logs and the bench JSON files.
# DEVICE=cpu runs every step on small CPU shapes instead: a dry run of the script itself (a few minutes on 2 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}; mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
budget=${BUDGET:-540}
if [ "$dev" = cpu ]; then
  Q=(--shape qwen3-512x8 --layers 2); L=(--shape qwen3-512x8 --layers 1); dt=float32; mp=no; s1=64; s2=128; reps=1; steps="10 20 20 5"; qn=dry-qwen3-512x8-2layers; ln=dry-qwen3-512x8-1layer
else
  Q=(--shape Qwen/Qwen3-0.6B); L=(--shape meta-llama/Llama-3.1-8B --layers 8); dt=bfloat16; mp=bf16; s1=256; s2=1024; reps=3; steps="60 150 150 40"; qn=qwen3-0.6b; ln=llama8b-8layers
fi
read -r sft_steps lcdd_steps trig_steps warm <<< "$steps"
t0=$(date +%s); stamp() { echo "[gpu_check] $1 at $(( $(date +%s) - t0 )) s"; }
# step NAME LIMIT CMD...: run CMD under `timeout LIMIT` if LIMIT seconds are left of the budget, else say it was skipped
step() { local name=$1 limit=$2; shift 2
         if [ $(( $(date +%s) - t0 + limit )) -gt "$budget" ]; then stamp "SKIPPED (budget) $name"; return; fi
         stamp "$name"; timeout "$limit" "$@"; }
$py -c "import torch, transformers, accelerate; print('torch', torch.__version__, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"

step "1. exactness tests" 200 $py -m pytest -q -s -p no:cacheprovider tests/test_exactness.py tests/test_graphs.py 2>&1 | grep -v Warning | tee "$out/tests.log"

step "2. graphed build and its options, layer builds, rebuild, ungated, SFT eager and compiled, in one process" 200 \
  $py tools/step_variants.py "${Q[@]}" --device "$dev" --dtype "$dt" --batch 8 --seq "$s1" --reps $(( reps*3 )) --fused --chunked --compiled-sft 2>&1 | tee "$out/step_variants.log"
step "2. the same on 8 layers of the 8B shape (bound by the device: the fused option's case)" 150 \
  $py tools/step_variants.py "${L[@]}" --device "$dev" --dtype "$dt" --batch 8 --seq "$s1" --reps $(( reps*3 )) --fused 2>&1 | tee "$out/step_variants_8b.log"

b() { local name=$1 limit=$2; shift 2
      step "bench $name" "$limit" $py -m sft_reverse.experiment bench --device "$dev" --reps "$reps" --quiet --json "$out/bench_$name.json" "$@" 2>&1 | tee "$out/bench_$name.md"; }
b ${qn}_${dt}_seq$s1 100 "${Q[@]}" --dtype "$dt" --batch 8 --seq "$s1"
b ${ln}_${dt}_seq$s1 150 "${L[@]}" --dtype "$dt" --batch 8 --seq "$s1"

step "4. kernels per step (profiler)" 70 $py tools/profile_step.py "${Q[@]}" --device "$dev" --dtype "$dt" --batch 8 --seq "$s1" --steps 3 --rows 12 2>&1 | grep -v "USDT" | tee "$out/profile.log"

step "5. the same with SFT compiled too (its compile time in the warm-up)" 120 \
  $py tools/step_variants.py "${Q[@]}" --device "$dev" --dtype "$dt" --batch 8 --seq "$s1" --reps $(( reps*3 )) --compiled-sft 2>&1 | tee "$out/step_variants_compiled.log"

b ${qn}_${dt}_seq$s2 90 "${Q[@]}" --dtype "$dt" --batch 8 --seq "$s2"
b ${ln}_${dt}_seq$s2 150 "${L[@]}" --dtype "$dt" --batch 8 --seq "$s2"
[ "$dev" = cpu ] || b qwen3-0.6b_fp32-autocast-bf16 90 "${Q[@]}" --dtype float32 --mixed-precision bf16

step "7. mixed precision tests" 120 $py -m pytest -q -s -p no:cacheprovider tests/test_mixed_precision.py 2>&1 | grep -v Warning | tee "$out/tests_mp.log"
cat > "$out/tiny_$dev.yaml" <<YAML
task: fixed_response
n_train: 96
n_eval: 16
device: $dev
mixed_precision: '$mp'
out_dir: /tmp/tiny_$dev
sft: {max_steps: $sft_steps, batch_size: 16}
lcdd: {max_steps: $lcdd_steps, warmup_steps: $warm, check_every: 10}
trigger: {steps: $trig_steps, n_prompts: 32}
utility: {facts: {limit: 40}}
YAML
step "7. tiny-lab run on $dev, mixed precision $mp" 120 $py -m sft_reverse.experiment run "$out/tiny_$dev.yaml" --quiet 2>&1 | tail -25 | tee "$out/tiny_$dev.log"
stamp "done"
