"""Where an LCDD step's time goes, against a full-SFT step, on one model shape: torch.profiler over a few steps of each,
with the number of aten ops (and CUDA kernels) per step.

    python tools/profile_step.py --shape Qwen/Qwen3-0.6B --device cuda --dtype bfloat16 [--batch 8 --seq 256]

Prints the top operators by self time (CUDA time on a GPU, CPU time otherwise) for each kind of step."""
import argparse, sys
import torch
from torch.profiler import profile, ProfilerActivity
from sft_reverse.bench import shape_model, _batch, lcdd_stepper, sft_stepper
from sft_reverse.carrier import make_carrier, perturbed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shape', default='qwen3-512x8'); p.add_argument('--layers', type=int, default=None)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', default='float32'); p.add_argument('--batch', type=int, default=8); p.add_argument('--seq', type=int, default=256)
    p.add_argument('--steps', type=int, default=3); p.add_argument('--rows', type=int, default=18)
    a = p.parse_args(argv)
    base = shape_model(a.shape, a.layers, getattr(torch, a.dtype), a.device)
    ft = perturbed(base)
    b = _batch(base, a.batch, a.seq)
    cuda = torch.device(a.device).type == 'cuda'
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    key = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    for name, make in (('lcdd', lambda: lcdd_stepper(make_carrier(base, ft), b)), ('sft', lambda: sft_stepper(ft, b))):
        step = make()
        for _ in range(2): step()          # warm-up (allocator, kernels, optimizer state)
        if cuda: torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            for _ in range(a.steps): step()
            if cuda: torch.cuda.synchronize()
        print(f"\n### {name} step: {a.shape}, batch {a.batch}x{a.seq}, {a.device}/{a.dtype}, {a.steps} steps\n")
        kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA) if cuda else None
        aten = sum(1 for e in prof.events() if e.name.startswith('aten::'))
        print(f"per step: {aten/a.steps:.0f} aten events (nested calls included)" + (f", {kernels/a.steps:.0f} CUDA kernels" if cuda else '') + '\n')
        print(prof.key_averages().table(sort_by=key, row_limit=a.rows))
        sys.stdout.flush()


if __name__ == '__main__': main()
