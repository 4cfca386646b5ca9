"""Time today's LCDD step against variants of its gated projection, interleaved in one process (issue 15's CPU gap).

Separate processes differ by several per cent in LCDD ÷ SFT; variants timed in one process, in turn, do not share that
noise. Each variant swaps `DeltaLinear.forward` for the length of one step and puts it back:

- `lcdd`: today's code (`MaskedLinearFn`: the masked weight rebuilt in the backward pass, nothing weight-sized saved);
- `add`: `F.linear(x, W_base + ΔW)`, no masks: what the same loop costs without gating (ΔW trains, gates get no gradient);
- `layerbuild`: each decoder layer builds its projections' masked weights when it starts (`MaskedWeight`, gate gradients
  through the bank as today), and the projections run a plain `F.linear` on them. The linear keeps its weight for the
  backward pass, one weight-sized tensor per projection until its gradient is done: the memory `MaskedLinearFn` saves.

    python tools/step_variants.py [--batch 8] [--seq 256] [--reps 30] [--shape tiny]

Prints the median seconds of each step and each variant's ratio to the full-SFT step. A measurement tool, not a test.
"""
import argparse, warnings

import torch
import torch.nn.functional as F


class MaskedWeight(torch.autograd.Function):
    "W_base + (m_col ⊗ m_row) ⊙ ΔW; the backward pass gives gΔW = G ⊙ M and both gate gradients from G ⊙ ΔW."
    @staticmethod
    def forward(ctx, w, d, m_col, m_row):
        ctx.save_for_backward(d, m_col, m_row)
        return torch.addcmul(w.to(d.dtype), torch.outer(m_col, m_row), d)

    @staticmethod
    def backward(ctx, G):
        d, m_col, m_row = ctx.saved_tensors
        Gd = G*d
        return None, G*torch.outer(m_col, m_row), Gd @ m_row, Gd.t().mv(m_col)


def main():
    from sft_reverse.bench import shape_model, lcdd_stepper, sft_stepper, interleave
    from sft_reverse.carrier import make_carrier, perturbed
    from sft_reverse.delta import DeltaLinear
    from sft_reverse.tiny import set_threads
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shape', default='tiny'); p.add_argument('--batch', type=int, default=8)
    p.add_argument('--seq', type=int, default=256); p.add_argument('--reps', type=int, default=30)
    a = p.parse_args()
    set_threads()
    base = shape_model(a.shape); ft = perturbed(base, scale=0.01, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); car = make_carrier(base, ft)
    ids = torch.randint(3, base.config.vocab_size, (a.batch, a.seq), generator=torch.Generator().manual_seed(0))
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())   # random tokens, as the bench's
    lcdd, sft = lcdd_stepper(car, batch), sft_stepper(ft, batch)
    today = DeltaLinear.forward

    def layer_build(layer, args, kwargs):
        for m in layer.modules():
            if isinstance(m, DeltaLinear):
                mc, mr = m.masks()
                m.__dict__['_built'] = MaskedWeight.apply(m.weight, m.delta, mc, mr)

    def swapped(forward, layer_hook=None):
        def step():
            hooks = [l.register_forward_pre_hook(layer_hook, with_kwargs=True) for l in car.model.layers] if layer_hook else []
            DeltaLinear.forward = forward
            try: return lcdd()
            finally:
                DeltaLinear.forward = today
                for h in hooks: h.remove()
        return step

    fns = dict(lcdd=lcdd, sft=sft, add=swapped(lambda self, x: F.linear(x, self.weight + self.delta)),
               layerbuild=swapped(lambda self, x: F.linear(x, self.__dict__.pop('_built')), layer_build))
    t = interleave(fns, reps=a.reps, warmup=3)
    print(f"{a.shape}, batch {a.batch}×{a.seq}, {a.reps} rounds: " + ', '.join(f"{k} {v*1e3:.1f} ms" for k, v in t.items()))
    print(', '.join(f"{k} ÷ sft {t[k]/t['sft']:.4f}" for k in fns if k != 'sft'))


if __name__ == '__main__':
    main()
