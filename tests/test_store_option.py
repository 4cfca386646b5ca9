"""`RunConfig(lcdd=dict(store='theta'))`, the memory option, runs end to end in the tiny lab: the carrier trains θ = W_ft
instead of ΔW, has its own LCDD fingerprint, and (float32 weights, where θ's updates round like ΔW's) follows the default
run's LCDD closely: the same gates, losses within float tolerance."""
import json, shutil
from pathlib import Path

from safetensors import safe_open

from sft_reverse.experiment import RunConfig, run, stage_keys, resolve, load_model
from sft_reverse.carrier import load_carrier

SMALL = dict(task='fixed_response', n_train=48, n_eval=8, max_new_tokens=16, seed=0, checkpoint_every=8,
             sft=dict(max_steps=12, batch_size=8),
             lcdd=dict(max_steps=24, warmup_steps=6, check_every=3, batch_size=8, stall_patience=1000),
             trigger=dict(steps=10, n_prompts=16, batch_size=8),
             utility=dict(facts=dict(limit=40)))


def test_theta_store_runs_and_tracks_the_delta_store(tmp_path):
    cfgs = {s: RunConfig(**dict(SMALL, lcdd=dict(SMALL['lcdd'], store=s), out_dir=str(tmp_path/s))) for s in ('delta', 'theta')}
    res = dict(delta=run(cfgs['delta'], progress=False))
    shutil.copytree(tmp_path/'delta', tmp_path/'theta')   # the same data and SFT stages, found by their fingerprints
    res['theta'] = run(cfgs['theta'], progress=False)
    assert 'store' not in res['delta']['config']['lcdd'] and res['theta']['config']['lcdd']['store'] == 'theta'
    kd, kt = (stage_keys(resolve(c)) for c in cfgs.values())
    assert kd['sft'] == kt['sft'] and kd['lcdd'] != kt['lcdd']
    hd, ht = (json.loads((tmp_path/s/'lcdd'/'history.json').read_text())['history'] for s in ('delta', 'theta'))
    assert len(hd) == len(ht) > 0
    for a, b in zip(hd, ht):
        assert abs(a['loss'] - b['loss']) <= 1e-4*max(1.0, abs(a['loss'])), (a, b)
    assert res['delta']['sparsity'] == res['theta']['sparsity']
    for s, other in (('delta', 'theta'), ('theta', 'delta')):   # what LCDD trained, read from its checkpoints
        names = set()
        for f in (tmp_path/s/'lcdd'/'ckpt').glob('*/*.safetensors'):
            with safe_open(str(f), 'pt') as h: names |= set(h.keys())
        assert any(n.endswith('.' + s) for n in names) and not any(n.endswith('.' + other) for n in names), (s, sorted(names)[:5])
    base, _ = load_model('tiny', progress=False)
    c = load_carrier(base, tmp_path/'theta'/'lcdd'/'carrier')   # a theta-store carrier is saved in the same format
    assert c.deltas and all(d.store == 'delta' for d in c.deltas.values())


def test_layer_build_off_runs_the_same_lcdd(tmp_path, monkeypatch):
    "`lcdd.layer_build: false` (the memory-lean path, for 7-8B models on one card) runs end to end, with the layer builds off, and gives the default's LCDD."
    from sft_reverse.delta import LayerBuild
    built = []
    orig = LayerBuild._build
    def counted(self, *a):
        got = orig(self, *a); built.append(len(got)); return got   # projections built together (none while the carrier is frozen)
    monkeypatch.setattr(LayerBuild, '_build', counted)
    cfgs = {k: RunConfig(**dict(SMALL, lcdd=dict(SMALL['lcdd'], **({} if k == 'on' else dict(layer_build=False))), out_dir=str(tmp_path/k)))
            for k in ('on', 'off')}
    run(cfgs['on'], progress=False)
    assert sum(built) > 0, 'the default run builds each layer in one node'
    shutil.copytree(tmp_path/'on', tmp_path/'off')
    built.clear()
    res = run(cfgs['off'], progress=False)
    assert sum(built) == 0 and res['config']['lcdd']['layer_build'] is False
    ko, kf = (stage_keys(resolve(c)) for c in cfgs.values())
    assert ko['sft'] == kf['sft'] and ko['lcdd'] != kf['lcdd']
    ho, hf = (json.loads((tmp_path/k/'lcdd'/'history.json').read_text())['history'] for k in ('on', 'off'))
    assert len(ho) == len(hf) > 0
    for a, b in zip(ho, hf): assert abs(a['loss'] - b['loss']) <= 1e-5*max(1.0, abs(a['loss'])), (a, b)


def test_fuse_runs_the_same_lcdd(tmp_path, monkeypatch):
    "`lcdd.fuse: true` compiles the masked-weight build (on a CPU, without graphs) and gives the default's LCDD: the same gates, losses within float tolerance (a gate's gradient is summed in the compiler's order)."
    from sft_reverse.graphs import BuildPlan
    fused = []
    orig = BuildPlan._warm
    def counted(self):
        fused.append(len(self.mods)); return orig(self)   # a fused plan, compiled as it is made
    monkeypatch.setattr(BuildPlan, '_warm', counted)
    cfgs = {k: RunConfig(**dict(SMALL, lcdd=dict(SMALL['lcdd'], **({} if k == 'default' else dict(fuse=True))), out_dir=str(tmp_path/k)))
            for k in ('default', 'fused')}
    res = dict(default=run(cfgs['default'], progress=False))
    assert not fused and 'fuse' not in res['default']['config']['lcdd']
    shutil.copytree(tmp_path/'default', tmp_path/'fused')
    res['fused'] = run(cfgs['fused'], progress=False)
    assert fused and res['fused']['config']['lcdd']['fuse'] is True
    kd, kf = (stage_keys(resolve(c)) for c in cfgs.values())
    assert kd['sft'] == kf['sft'] and kd['lcdd'] != kf['lcdd']
    hd, hf = (json.loads((tmp_path/k/'lcdd'/'history.json').read_text())['history'] for k in ('default', 'fused'))
    assert len(hd) == len(hf) > 0
    for a, b in zip(hd, hf): assert abs(a['loss'] - b['loss']) <= 1e-5*max(1.0, abs(a['loss'])), (a, b)
    assert res['default']['sparsity'] == res['fused']['sparsity']
