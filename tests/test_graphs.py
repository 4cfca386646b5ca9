"""The carrier's model build (`graphs.ModelBuild`) against the layer builds, over several optimizer steps: on CPU its
arithmetic without graphs (mode 'eager'), on CUDA the captured graphs. Losses and every gradient must be equal bit for
bit, with gradient accumulation over two micro-batches, with only the gates training, and under bf16 autocast. With the
fused option (`fuse`, compiled by `torch.compile`; on a CPU without graphs, under mode 'auto') the masked weights and gΔW
stay exact and the gate gradients agree within 1e-5, and a compiler that cannot run leaves the layer builds to train.
With `alias_grads` each ΔW's `.grad` is the graphs' own tensor, and the numbers are unchanged. With `chunks` each
layer's plan (graphs) is its own node, and the numbers are unchanged."""
import pytest, torch, transformers
from sft_reverse.carrier import make_carrier, perturbed

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _carrier(dtype, device, layers=2):
    cfg = transformers.Qwen3Config(hidden_size=32, num_hidden_layers=layers, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=8, vocab_size=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = transformers.Qwen3ForCausalLM(cfg).to(device=device, dtype=dtype)
    c = make_carrier(base, perturbed(base, 0.05, seed=1))
    with torch.no_grad():
        for i, g in enumerate(c.gates.values()): g.logits[i % 3::3] = -0.5
    return c


def _run(mode, dtype, device, steps=3, micro=1, gates_only=False, autocast=False, fuse=False, alias=False, chunks=1, layers=2):
    "Losses and the last step's gradients of `steps` AdamW steps, each over `micro` micro-batches."
    c = _carrier(dtype, device, layers)
    c.model_build.mode, c.model_build.fuse, c.model_build.alias_grads, c.model_build.chunks = mode, fuse, alias, chunks
    if gates_only:
        for p in c.deltas.values(): p.delta.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in c.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        for _ in range(micro):
            ids = torch.randint(0, 64, (2, 12), generator=g).to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                loss = c(input_ids=ids, labels=ids).loss
            loss.backward(); losses.append(loss.item())
        grads = {n: p.grad.clone() for n, p in c.named_parameters() if p.grad is not None}
        opt.step()
    return losses, grads, c


CASES = dict(fp32=dict(dtype=torch.float32), bf16=dict(dtype=torch.bfloat16), accum=dict(dtype=torch.float32, micro=2),
             gates_only=dict(dtype=torch.float32, gates_only=True), autocast=dict(dtype=torch.float32, autocast=True))


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('chunks', [1, 2])   # 2: one plan per layer of the two-layer carrier, each built at its layer's first projection, each its own node
def test_model_build_matches_layer_builds(device, case, chunks):
    mode = 'graphs' if device == 'cuda' else 'eager'
    la, ga, _ = _run('off', device=device, **CASES[case])
    lb, gb, cb = _run(mode, device=device, chunks=chunks, **CASES[case])
    plans = cb.model_build.plans
    assert len(plans) == chunks and sum(len(p.mods) for p in plans) == 14 and all(len(p.mods) == 14//chunks for p in plans)
    assert all(p.graphed == (device == 'cuda') for p in plans)
    if device == 'cuda': assert [p.captures for p in plans] == [1]*chunks   # captured once, replayed every pass after
    assert la == lb
    assert set(ga) == set(gb)
    bad = [n for n in ga if not torch.equal(ga[n], gb[n])]
    assert not bad, bad[:5]
    if device == 'cuda':   # no `.grad` is a tensor of the graphs' pools
        pool = {t.data_ptr() for p in plans for t in (*p.gd, p.gf) if t is not None}
        assert not any(p.grad.data_ptr() in pool for p in cb.parameters() if p.grad is not None)


@pytest.mark.parametrize('device', DEVICES)
def test_fused_build_matches_layer_builds(device):
    mode = 'auto'   # with `fuse`, on CUDA the graphs of the fused kernels; on a CPU the fused kernels without graphs
    la, ga, _ = _run('off', torch.float32, device, steps=1)
    lb, gb, cb = _run(mode, torch.float32, device, steps=1, fuse=True)
    assert cb.model_build.plan.fuse and cb.model_build.plan.graphed == (device == 'cuda') and la == lb   # the forward pass is exact
    for n in ga:
        if n.endswith('.logits'): torch.testing.assert_close(gb[n], ga[n], rtol=1e-5, atol=1e-5*ga[n].abs().max().item())
        else: assert torch.equal(ga[n], gb[n]), n
    la, _, _ = _run('off', torch.float32, device, steps=3, micro=2)
    lb, _, _ = _run(mode, torch.float32, device, steps=3, micro=2, fuse=True)
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-5, atol=0)


@pytest.mark.parametrize('device', DEVICES)
def test_fused_plans_beyond_the_compile_cache_limit(device):
    "Ten fused plans (one per layer): each compiles its own entry, where one shared entry would fail at torch.compile's recompile limit (8) with the ninth."
    la, ga, _ = _run('off', torch.float32, device, steps=1, layers=10)
    lb, gb, cb = _run('auto', torch.float32, device, steps=1, fuse=True, chunks=10, layers=10)
    assert len(cb.model_build.plans) == 10 and all(p.fuse for p in cb.model_build.plans) and la == lb
    assert all(torch.equal(ga[n], gb[n]) for n in ga if not n.endswith('.logits'))


@pytest.mark.parametrize('device', DEVICES)
def test_a_fresh_carrier_makes_its_plan_once(device):
    "The first pass lays the gates' logits out in the bank's flat tensor, which the plan's key reads: the plan is keyed after that, so the second pass replays it rather than making (capturing, compiling) another."
    c = _carrier(torch.float32, device)
    c.model_build.mode = 'graphs' if device == 'cuda' else 'eager'
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0)).to(device)
    plans = []
    for _ in range(3):
        c(input_ids=ids, labels=ids).loss.backward(); c.zero_grad(set_to_none=True)
        plans.append(c.model_build.plan)
    assert plans[0] is not None and plans[0] is plans[1] is plans[2]


def test_a_build_that_cannot_be_made_falls_back_to_the_layer_builds(monkeypatch):
    "A capture that fails (here: made to fail) warns once, switches the model build off, and the step runs as the layer builds would."
    from sft_reverse import graphs
    la, ga, _ = _run('off', torch.float32, 'cpu', steps=1)
    def fail(self, *a, **k): raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
    monkeypatch.setattr(graphs.BuildPlan, '__init__', fail)
    with pytest.warns(UserWarning, match="could not be made.*falling back to the layer builds"):
        lb, gb, cb = _run('eager', torch.float32, 'cpu', steps=1)
    assert cb.model_build.mode == 'off' and cb.model_build.plan is None
    assert la == lb and all(torch.equal(ga[n], gb[n]) for n in ga)


def test_a_compiler_that_cannot_run_falls_back_to_the_layer_builds(monkeypatch):
    "With `fuse` on a CPU the plan compiles when it is made: a compiler that fails there (here: made to fail) warns, switches the build off, and the step runs as the layer builds would."
    la, ga, _ = _run('off', torch.float32, 'cpu', steps=1)
    def compile_(fn, **kw):
        def failed(*a, **k): raise RuntimeError("InductorError: CppCompileError: C++ compile error: g++: not found")
        return failed
    monkeypatch.setattr(torch, 'compile', compile_)
    with pytest.warns(UserWarning, match=r"could not be compiled \(fuse\) \(InductorError.*falling back to the layer builds"):
        lb, gb, cb = _run('auto', torch.float32, 'cpu', steps=1, fuse=True)
    assert cb.model_build.mode == 'off' and cb.model_build.plan is None
    assert la == lb and all(torch.equal(ga[n], gb[n]) for n in ga)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', ['fp32', 'bf16', 'accum'])
def test_aliased_grads_match_layer_builds(device, case):
    mode = 'graphs' if device == 'cuda' else 'eager'
    la, ga, _ = _run('off', device=device, **CASES[case])
    lb, gb, cb = _run(mode, device=device, alias=True, **CASES[case])
    assert la == lb and set(ga) == set(gb)
    bad = [n for n in ga if not torch.equal(ga[n], gb[n])]
    assert not bad, bad[:5]
    if device == 'cuda' and case != 'accum':   # one micro-batch: each ΔW's `.grad` is the pool's own gΔW
        plan = cb.model_build.plan
        assert all(p.delta.grad is g for p, g in zip(plan.mods, plan.gd))


def test_chunks_out_of_range_are_refused():
    c = _carrier(torch.float32, 'cpu')
    for bad in (0, 3, 1.5, '2'):
        with pytest.raises(ValueError, match=r"chunks must be an integer from 1 to the number of layers \(2\)"): c.model_build.chunks = bad
    c.model_build.chunks = 2
    assert 'chunks=2' in repr(c.model_build)
