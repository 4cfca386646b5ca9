"""The weight-masking autograd function against plain autograd, on every device present (CPU here, CUDA in
tools/gpu_check.sh): output and gΔW bit for bit, gate gradients within 1e-5 relative in float32, a float64 gradcheck,
a frozen projection's cached masked weight giving the trainable path's output and input gradient bit for bit,
the theta store (the bf16 memory option) giving the ΔW store's output and gradients bit for bit, a decoder layer's
projections built together (`LayerBuild`: one `MaskedWeightsFn`, plain linears) giving `MaskedLinearFn`'s output, input
gradient and gΔW bit for bit and its gate gradients within 1e-5, with a float64 gradcheck, the flat GateBank's
gate gradients equal to the per-gate STE's, and `adamw` (fused on CUDA) taking torch's default AdamW steps."""
import pytest, torch
import torch.nn.functional as F
from sft_reverse.delta import MaskedLinearFn, MaskedWeightsFn, LayerBuild, HeadRepeat, DeltaLinear, delta_for
from sft_reverse.gates import Gate, GateBank
from sft_reverse.sft import adamw

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

def _case(dev, dtype, seed=0, n=(2, 5), d_in=24, d_out=40):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(dev)
    bits = lambda k: (torch.rand(k, generator=g) < 0.6).to(dtype).to(dev)
    return r(*n, d_in), r(d_out, d_in), 0.1*r(d_out, d_in), bits(d_out), bits(d_in), r(d_out), 0.1*r(d_out), r(*n, d_out)

def _grads(f, x, w, d, mc, mr, b, db, gy):
    leaves = [t.clone().requires_grad_() for t in (x, d, mc, mr, db)]
    y = f(leaves[0], w, leaves[1], leaves[2], leaves[3], b, leaves[4])
    return (y.detach(), *torch.autograd.grad((y*gy).sum(), leaves))

@pytest.mark.parametrize('dev', DEVICES)
def test_masked_linear_matches_autograd(dev):
    x, w, d, mc, mr, b, db, gy = _case(dev, torch.float32)
    plain = lambda x, w, d, mc, mr, b, db: F.linear(x, w + (mc[:, None]*mr[None, :])*d, b + mc*db)   # all by autograd
    y, gx, gd, gc, gr, gdb = _grads(MaskedLinearFn.apply, x, w, d, mc, mr, b, db, gy)
    y0, gx0, gd0, gc0, gr0, gdb0 = _grads(plain, x, w, d, mc, mr, b, db, gy)
    assert torch.equal(y, y0) and torch.equal(gd, gd0) and torch.equal(gdb, gdb0)
    for a, a0 in ((gx, gx0), (gc, gc0), (gr, gr0)):
        assert ((a - a0).abs().max()/a0.abs().max()).item() <= 1e-5

@pytest.mark.parametrize('dev', DEVICES)
def test_masked_linear_gradcheck_float64(dev):
    x, w, d, mc, mr, b, db, _ = _case(dev, torch.float64, n=(3,), d_in=6, d_out=5)
    ins = (x.requires_grad_(), w, d.requires_grad_(), mc.requires_grad_(), mr.requires_grad_(), b, db.requires_grad_())
    assert torch.autograd.gradcheck(MaskedLinearFn.apply, ins)

@pytest.mark.parametrize('dev', DEVICES)
def test_frozen_projection_cache_is_exact(dev):
    torch.manual_seed(0)
    w, wf, b, bf = torch.randn(40, 24), torch.randn(40, 24), torch.randn(40), torch.randn(40)
    row, col = Gate(24, seed=1), Gate(40, seed=2)
    with torch.no_grad(): row.logits[::3] = -1.; col.logits[1::4] = -1.
    dl = DeltaLinear(w, delta_for(w, wf), row, col, b, delta_for(b, bf)).to(dev)
    row.to(dev); col.to(dev)
    x = torch.randn(3, 5, 24, device=dev)
    def run():
        xx = x.clone().requires_grad_(); y = dl(xx); return y.detach(), torch.autograd.grad((y*y).sum(), xx)[0]
    y_t, g_t = run()
    for p in (dl.delta, dl.delta_bias, row.logits, col.logits): p.requires_grad_(False)
    y_f, g_f = run()
    assert dl.frozen() and torch.equal(y_f, y_t) and torch.equal(g_f, g_t)

@pytest.mark.parametrize('dev', DEVICES)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_theta_store_matches_delta_store(dev, dtype):
    "The memory option: θ = W_ft in the base dtype gives the ΔW store's output, gate gradients and Δb gradient bit for bit, and gθ = gΔW rounded."
    g = torch.Generator().manual_seed(3)
    wb, bb = torch.randn(40, 24, generator=g).to(dtype), torch.randn(40, generator=g).to(dtype)
    wf, bf = (wb.float() + 0.3*torch.randn(40, 24, generator=g)).to(dtype), (bb.float() + 0.3*torch.randn(40, generator=g)).to(dtype)
    x = torch.randn(3, 5, 24, generator=g).to(dtype).to(dev)
    out = {}
    for store in ('delta', 'theta'):
        row, col = Gate(24, seed=1).to(dev), Gate(40, seed=2).to(dev)
        with torch.no_grad(): row.logits[::3] = -1.; col.logits[1::4] = -1.
        dl = DeltaLinear(wb, delta_for(wb, wf), row, col, bb, delta_for(bb, bf), store=store).to(dev)
        y = dl(x); y.backward(torch.ones_like(y))
        out[store] = (y.detach(), dl.trained.grad, row.logits.grad, col.logits.grad, dl.delta_bias.grad)
    (y0, gd, gr0, gc0, gb0), (y1, gt, gr1, gc1, gb1) = out['delta'], out['theta']
    assert torch.equal(y0, y1) and torch.equal(gr0, gr1) and torch.equal(gc0, gc1) and torch.equal(gb0, gb1)
    assert gt.dtype == dtype and torch.equal(gd.to(dtype), gt)


class _Layer(torch.nn.Module):
    "Four gated projections as a decoder layer holds them: a shared read gate, two that share both gates (as gate and up), a bias, and a GQA readout."
    def __init__(self, dtype=torch.float32, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
        self.gs = [Gate(n, seed=seed + i, dtype=dtype) for i, n in enumerate((10, 8, 6, 7))]   # read, a, kv (2 heads x 3), out
        with torch.no_grad():
            for gt in self.gs: gt.logits[torch.rand(gt.n, generator=g) < 0.3] = -1.   # some channels closed
        rd, a, kv, out = self.gs
        mk = lambda o, i, row, col, bias=False, ex=None: DeltaLinear(r(o, i), 0.1*r(o, i), row, col, r(o) if bias else None,
                                                                   0.1*r(o) if bias else None, row_expand=ex)
        self.p = torch.nn.ModuleList([mk(8, 10, rd, a, bias=True), mk(6, 10, rd, kv), mk(8, 10, rd, a), mk(7, 12, kv, out, ex=HeadRepeat(2, 3))])
    def forward(self, x):
        pa, pkv, pc, po = self.p
        z = pkv(x).view(*x.shape[:-1], 2, 1, 3).expand(*x.shape[:-1], 2, 2, 3).reshape(*x.shape[:-1], 12)
        return torch.cat([pa(x)*pc(x), po(z)], -1)

def _layer_grads(layer, x, gy):
    x = x.clone().requires_grad_()
    y = layer(x); y.backward(gy)
    return [y.detach(), x.grad] + [p.trained.grad for p in layer.p] + [layer.p[0].delta_bias.grad] + [gt.logits.grad for gt in layer.gs]

@pytest.mark.parametrize('dev', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_layer_build_matches_masked_linear(dev, dtype):
    "16-bit weights too: W is built in float32 from the bf16 base and rounded as it is stored, G read as bf16 by the products."
    layer = _Layer().to(dev)
    for p in layer.p:   # the base weights and bias in `dtype`; ΔW, Δb and the gates stay float32
        p.weight.data = p.weight.data.to(dtype)
        if p.bias is not None: p.bias.data = p.bias.data.to(dtype)
    for gt in layer.gs: gt.to(dev)
    x, gy = torch.randn(3, 5, 10, device=dev).to(dtype), torch.randn(3, 5, 15, device=dev).to(dtype)
    ref = _layer_grads(layer, x, gy)   # no LayerBuild: each projection runs MaskedLinearFn
    layer.zero_grad(set_to_none=True)
    for gt in layer.gs: gt.logits.grad = None
    lb = LayerBuild(list(layer.p)).attach(layer)
    y = layer(x)
    names = set(); st = [y.grad_fn]
    while st:
        f = st.pop()
        if f is not None and type(f).__name__ not in names: names.add(type(f).__name__); st += [n for n, _ in f.next_functions]
    assert 'MaskedWeightsFnBackward' in names and 'MaskedLinearFnBackward' not in names
    got = _layer_grads(layer, x, gy)
    n_exact = 2 + len(layer.p) + 1   # y, gx, every gΔW, gΔb
    for a, b in zip(got[:n_exact], ref[:n_exact]): assert torch.equal(a, b)
    for a, b in zip(got[n_exact:], ref[n_exact:]): assert ((a - b).abs().max()/b.abs().max()).item() <= 1e-5
    assert not lb.active and lb._built is None   # the pass is over: nothing built is left behind
    lb.detach(layer)
    assert not layer._forward_pre_hooks and not layer._forward_hooks and all('_build' not in p.__dict__ for p in layer.p)

def test_masked_weights_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    # gates 0 (3 channels), 1 (5), 2 (4): projections 0 and 1 read gates 0 x 1 (shared M); projection 2 reads gate 0
    # expanded to 6 channels (2 query heads on one kv head of 3) as rows, gate 2 as columns
    spec = [(0, 1, None), (0, 1, None), (2, 0, HeadRepeat(2, 3))]
    ws, ds = [r(3, 5), r(3, 5), r(4, 6)], [r(3, 5), r(3, 5), r(4, 6)]
    ms = [(torch.rand(n, generator=g) < 0.7).double() for n in (3, 5, 4)]
    ins = [t.requires_grad_() for t in ds] + [m.requires_grad_() for m in ms]
    f = lambda *a: MaskedWeightsFn.apply(spec, False, None, *ws, *a)
    assert torch.autograd.gradcheck(f, ins)   # one output's gradient at a time
    assert torch.autograd.gradcheck(lambda *a: torch.cat([W.flatten() for W in f(*a)]), ins)   # all at once: a gate's gradient summed over projections


@pytest.mark.parametrize('dev', DEVICES)
def test_gate_bank_flat_gradients(dev):
    gates = [Gate(n, seed=i).to(dev) for i, n in enumerate((5, 3, 7))]
    with torch.no_grad(): gates[1].logits[0] = -0.5
    w = [torch.randn(g.n, generator=torch.Generator().manual_seed(9 + i)).to(dev) for i, g in enumerate(gates)]
    def grads(bank):
        for g in gates: g.logits.grad = None
        if bank is not None: bank.start()
        loss = sum((g.mask()*wi).sum() + (g.mask()*wi.exp()).sum() for g, wi in zip(gates, w))   # each gate used twice
        if bank is not None: bank.stop()
        loss.backward()
        return [g.logits.grad.clone() for g in gates]
    ref = grads(None)
    bank = GateBank(gates)
    got = grads(bank)
    for a, b in zip(got, ref): assert ((a - b).abs().max()/b.abs().max()).item() <= 1e-6   # summed before σ' rather than after
    f, gr = bank.flat()
    assert f.device.type == dev and gr is not None and all(g.logits.grad._base is gr for g in gates)

@pytest.mark.parametrize('dev', DEVICES)
def test_adamw_matches_default(dev):
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(64, 32, generator=g).to(dev), torch.randn(32, generator=g).to(dev)]
    grads = [[torch.randn(t.shape, generator=g).to(dev) for t in init] for _ in range(3)]
    runs = []
    for make in (lambda ps: adamw(ps, lr=1e-2, weight_decay=0.01), lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01)):
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        opt = make(ps)
        for gs in grads:
            for p, gg in zip(ps, gs): p.grad = gg.clone()
            opt.step()
        runs.append((ps, bool(opt.defaults.get('fused'))))
    (a, fused), (b, _) = runs
    assert fused == (dev == 'cuda')
    for x, y in zip(a, b): assert ((x - y).abs().max()/y.abs().max()).item() <= 1e-6
