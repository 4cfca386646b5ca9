"""Time today's LCDD step against variants of its gated projections and of the step, interleaved in one process (issue 15).

Separate processes differ by several per cent in LCDD ÷ SFT; variants timed in one process, in turn, do not share that
noise. Each variant changes the carrier for the length of one step and puts it back:

- `lcdd`: today's code. On CUDA every masked weight is built in one step replayed from a CUDA graph, and its backward
  from a second (`ModelBuild`); elsewhere each decoder layer builds its projections' masked weights in one
  `MaskedWeightsFn` node (`LayerBuild`). Either way the projections run a plain `F.linear` on their W, which the linear
  keeps for the backward pass.
- `layers`: the model build switched off (`mode = 'off'`): the layer builds, on any device.
- `eager` (not on CUDA): the model build without graphs (`mode = 'eager'`): its arithmetic in one node, launched from Python.
- `rebuild`: the layer builds switched off (`enabled = False`): each projection runs `MaskedLinearFn`, which keeps
  nothing weight-sized and rebuilds the masked weight in its backward pass (the code before the layer builds).
- `add`: `F.linear(x, W_base + ΔW)`, no masks: what the same loop costs without gating (ΔW trains, gates get no gradient).
- `sync_fwd` and `sft_sync_fwd`: the LCDD and full-SFT steps reading their loss (the step's one host sync) right after
  the forward pass instead of after the backward pass (`Learner.sync = 'forward'`). On a GPU whose step is bound by the
  host, the backward's last kernels (the graphed build's backward) and the optimizer's then run while the host launches
  the next step, instead of the host waiting for them.
- `alias`: the graphed step with `model_build.alias_grads` on: each ΔW's `.grad` is the graphs' own gΔW, not
  autograd's copy of it (the same graphs, switched in Python only; on a CPU, where nothing is graphed, the same as `lcdd`).
- `fused` (with `--fused`): a copy of the carrier whose model build compiles its build and backward into fused kernels
  (`model_build.fuse = True`) before capturing them (on a CPU, under mode 'auto', without graphs); a copy, so that neither
  plan is captured anew each round.
- `fused_all` (with `--fused`): the fused copy with `alias_grads` and the early sync as well: every option at once.
- `chunked4` and `chunked` (with `--chunked`): copies of the carrier whose model build has 4 plans of consecutive
  layers, or one plan per layer (`model_build.chunks`): each plan's masked weights built at its first projection, and
  its backward graph replayed as soon as its layers' gradients are in, overlapping the rest of the backward pass, where
  one plan's runs after it (on a CPU, the arithmetic without graphs); copies, as for `fused`.
- `sft_compiled` (with `--compiled-sft`): the full-SFT step on a copy of the model whose forward is `torch.compile`d, the
  faster yardstick to report beside the eager one (its compile time falls in the warm-up rounds).

    python tools/step_variants.py [--batch 8] [--seq 256] [--reps 30] [--shape tiny] [--layers N] [--device cpu] [--dtype float32] [--compiled-sft] [--fused] [--chunked]

Prints the median seconds of each step and each variant's ratio to the full-SFT step. A measurement tool, not a test.
"""
import argparse, copy, warnings

import torch
import torch.nn.functional as F


def main():
    from sft_reverse.bench import shape_model, lcdd_stepper, sft_stepper, interleave
    from sft_reverse.carrier import make_carrier, perturbed
    from sft_reverse.delta import DeltaLinear
    from sft_reverse.tiny import set_threads
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shape', default='tiny'); p.add_argument('--layers', type=int, default=None); p.add_argument('--batch', type=int, default=8)
    p.add_argument('--seq', type=int, default=256); p.add_argument('--reps', type=int, default=30)
    p.add_argument('--device', default='cpu'); p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
    p.add_argument('--compiled-sft', action='store_true'); p.add_argument('--fused', action='store_true'); p.add_argument('--chunked', action='store_true')
    a = p.parse_args()
    if a.device == 'cpu': set_threads()
    base = shape_model(a.shape, a.layers, dtype=getattr(torch, a.dtype), device=a.device); ft = perturbed(base, scale=0.01, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); car = make_carrier(base, ft)
    ids = torch.randint(3, base.config.vocab_size, (a.batch, a.seq), generator=torch.Generator().manual_seed(0)).to(a.device)
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())   # random tokens, as the bench's
    lcdd, sft = lcdd_stepper(car, batch), sft_stepper(ft, batch)
    today = DeltaLinear.forward

    def swapped(forward):
        def step():
            DeltaLinear.forward = forward
            try: return lcdd()
            finally: DeltaLinear.forward = today
        return step

    def rebuild():
        for b in car.layer_builds: b.enabled = False
        try: return lcdd()
        finally:
            for b in car.layer_builds: b.enabled = True

    def layers():   # the model build declines (its plan, and graphs, kept for the next `lcdd` round)
        car.model_build._key = lambda dtype: None
        try: return lcdd()
        finally: del car.model_build._key

    def eager():   # CPU only: on CUDA switching modes every round would capture the graphs anew each time
        car.model_build.mode = 'eager'
        try: return lcdd()
        finally: car.model_build.mode = 'auto'

    def early(step):
        def run():
            step.learn.sync = 'forward'
            try: return step()
            finally: step.learn.sync = 'backward'
        return run

    def alias():
        car.model_build.alias_grads = True
        try: return lcdd()
        finally: car.model_build.alias_grads = False

    fns = dict(lcdd=lcdd, sft=sft, sync_fwd=early(lcdd), sft_sync_fwd=early(sft), alias=alias, layers=layers, **({} if a.device == 'cuda' else dict(eager=eager)), rebuild=rebuild, add=swapped(lambda self, x: F.linear(x, (self.weight + self.delta).to(x.dtype))))
    if a.fused:
        cf = copy.deepcopy(car); cf.model_build.fuse = True
        fns['fused'] = fstep = lcdd_stepper(cf, batch)
        def fused_all():
            cf.model_build.alias_grads, fstep.learn.sync = True, 'forward'
            try: return fstep()
            finally: cf.model_build.alias_grads, fstep.learn.sync = False, 'backward'
        fns['fused_all'] = fused_all
    for name, n in (('chunked4', min(4, len(car.layer_builds))), ('chunked', len(car.layer_builds))) if a.chunked else ():
        cc = copy.deepcopy(car); cc.model_build.chunks = n
        if a.device != 'cuda': cc.model_build.mode = 'eager'
        fns[name] = lcdd_stepper(cc, batch)
    if a.compiled_sft:
        sc = copy.deepcopy(ft); sc.compile()
        fns['sft_compiled'] = sft_stepper(sc, batch)
    t = interleave(fns, reps=a.reps, device=a.device, warmup=3)
    print(f"{a.shape} ({a.device}, {a.dtype}), batch {a.batch}×{a.seq}, {a.reps} rounds: " + ', '.join(f"{k} {v*1e3:.1f} ms" for k, v in t.items()))
    print(', '.join(f"{k} ÷ sft {t[k]/t['sft']:.4f}" for k in fns if k != 'sft'))
    if a.compiled_sft: print(f"lcdd ÷ sft_compiled {t['lcdd']/t['sft_compiled']:.4f}")


if __name__ == '__main__':
    main()
