"""SFT and LCDD sharded with FSDP2 over two CPU processes (gloo) train the same model and carrier as one process with the
same global batch, and a sharded LCDD run killed mid-way resumes from its checkpoint to the same end. Sharded or not, the
carrier's decoder layers build their masked weights in one node each (`LayerBuild`): under FSDP2 the first projection
to run builds them, after the layer's own hook has gathered its shards. The theta store (the memory option) shards the same way."""
import json, os, socket, subprocess, sys, textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import copy, json, sys, torch
    from pathlib import Path
    from accelerate import PartialState
    from sft_reverse.tiny import tiny_lab, corpus_files
    from sft_reverse.data import fixed_response
    from sft_reverse.carrier import make_carrier, perturbed
    from sft_reverse.lcdd import lcdd
    from sft_reverse.sft import sft
    from sft_reverse.delta import LayerBuild
    built, _build = [0], LayerBuild._build
    def _counted(self, *a):
        got = _build(self, *a); built[0] += len(got); return got
    LayerBuild._build = _counted
    out, bs, die = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = sys.argv[4] if len(sys.argv) > 4 else 'delta'   # 'theta': only LCDD, with the memory option
    torch.set_num_threads(1)
    state = PartialState(cpu=True)   # under torchrun: the gloo process group
    base, tok = tiny_lab(progress=False)
    rows = fixed_response(corpus_files()['alpaca'], n_train=64, n_eval=8).train
    h = dict(history=[]) if store == 'theta' else sft(copy.deepcopy(base), tok, rows, lr=5e-4, batch_size=bs, max_steps=4, warmup=0.0, out_dir=out/'sft', shard=True, progress=False)
    c = make_carrier(base, perturbed(base, 0.05, seed=3), store=store)
    def kill(rec):
        if rec['step'] == die: raise SystemExit(3)
    r = lcdd(c, tok, rows, max_steps=6, batch_size=bs, delta_lr=5e-4, gate_lr=1.0, warmup_steps=2, check_every=2, save_every=3,
             out_dir=out/'ckpt', shard=True, progress=False, callback=kill if die else None)
    if state.is_main_process:
        (out/'result.json').write_text(json.dumps(dict(sharded=r['sharded'], world=state.num_processes,
                                                       losses=[x['loss'] for x in r['history']],
                                                       sft_losses=[x['loss'] for x in h['history']], built=built[0])))
    import torch.distributed as dist
    if dist.is_initialized(): dist.barrier(); dist.destroy_process_group()   # a clean gloo shutdown before exit
''')

def _launch(tmp_path, out, bs, die=0, procs=2, store='delta'):
    env = dict(os.environ, OMP_NUM_THREADS='1', TRANSFORMERS_VERBOSITY='error')
    if procs == 1: cmd = [sys.executable, str(tmp_path/'train.py')]
    else:
        with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(procs), '--master_addr', '127.0.0.1',
               '--master_port', str(port), str(tmp_path/'train.py')]
    return subprocess.run(cmd + [str(tmp_path/out), str(bs), str(die), store], env=env, capture_output=True, text=True)

def test_fsdp_two_processes_match_one_and_resume(tmp_path):
    (tmp_path/'train.py').write_text(SCRIPT)
    one = _launch(tmp_path, 'one', 8, procs=1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(tmp_path, 'two', 4)
    assert two.returncode == 0, two.stderr[-3000:]
    r1, r2 = (json.loads((tmp_path/d/'result.json').read_text()) for d in ('one', 'two'))
    assert (r1['sharded'], r1['world'], r2['sharded'], r2['world']) == (False, 1, True, 2)
    assert r1['built'] == r2['built'] > 0, (r1['built'], r2['built'])   # every projection of every training forward, both ways
    s1, s2 = (load_file(str(tmp_path/d/'sft'/'step-0000004'/'model.safetensors')) for d in ('one', 'two'))
    assert set(s1) == set(s2) and all(s1[k].shape == s2[k].shape for k in s1)
    assert max((s1[k] - s2[k]).abs().max().item() for k in s1) < 1e-5                # SFT: the same weights
    assert max(abs(x - y) for x, y in zip(r1['sft_losses'], r2['sft_losses'])) < 1e-5
    a = load_file(str(tmp_path/'one'/'ckpt'/'step-0000006'/'model.safetensors'))
    b = load_file(str(tmp_path/'two'/'ckpt'/'step-0000006'/'model.safetensors'))
    assert set(a) == set(b) and any(k.endswith('.delta') for k in a) and any(k.endswith('.logits') for k in a)
    for k in a: assert a[k].shape == b[k].shape, k      # the checkpoint holds whole tensors, not shards
    logits = [k for k in a if k.endswith('logits')]
    closed = sum(int((a[k] <= 0).sum()) for k in logits)
    assert 0.1 < closed/sum(a[k].numel() for k in logits) < 0.9, closed   # some gates closed, not all
    assert all(torch.equal(a[k] > 0, b[k] > 0) for k in logits)          # the same gates
    assert max((a[k] - b[k]).abs().max().item() for k in a if not k.endswith('logits')) < 1e-5   # ΔW
    assert max((a[k] - b[k]).abs().max().item() for k in logits) < 1e-4
    assert max(abs(x - y) for x, y in zip(r1['losses'], r2['losses'])) < 1e-4
    # killed after step 4 (its last checkpoint is step 3), then the same command again
    dead = _launch(tmp_path, 'resumed', 4, die=4)
    assert dead.returncode != 0 and (tmp_path/'resumed'/'ckpt'/'step-0000003').exists()
    again = _launch(tmp_path, 'resumed', 4)
    assert again.returncode == 0, again.stderr[-3000:]
    c = load_file(str(tmp_path/'resumed'/'ckpt'/'step-0000006'/'model.safetensors'))
    assert max((b[k] - c[k]).abs().max().item() for k in b) < 1e-6
    r3 = json.loads((tmp_path/'resumed'/'result.json').read_text())
    assert max(abs(x - y) for x, y in zip(r2['losses'], r3['losses'])) < 1e-6


def test_fsdp_theta_store_matches_one_process(tmp_path):
    """The memory option sharded: θ = W_ft and its base weights in one unit per layer. In float32 (the tiny lab's dtype) two
    processes train the carrier one process trains. With bf16 weights each process's gradient of θ is bf16 and FSDP sums them
    in bf16, so the two runs drift apart by rounding (6 steps: θ within 0.003, where |θ| reaches 0.18; gate logits within 0.36)."""
    (tmp_path/'train.py').write_text(SCRIPT)
    runs = {n: _launch(tmp_path, n, bs, procs=p, store='theta') for n, bs, p in (('one', 8, 1), ('two', 4, 2))}
    for r in runs.values(): assert r.returncode == 0, r.stderr[-3000:]
    a, b = (load_file(str(tmp_path/n/'ckpt'/'step-0000006'/'model.safetensors')) for n in runs)
    assert set(a) == set(b) and any(k.endswith('.theta') for k in a) and not any(k.endswith('.delta') for k in a)
    logits = [k for k in a if k.endswith('logits')]
    closed = sum(int((a[k] <= 0).sum()) for k in logits)
    assert 0.1 < closed/sum(a[k].numel() for k in logits) < 0.9, closed
    assert all(torch.equal(a[k] > 0, b[k] > 0) for k in logits)                                   # the same gates
    assert max((a[k] - b[k]).abs().max().item() for k in a if not k.endswith('logits')) < 1e-5   # θ
    assert max((a[k] - b[k]).abs().max().item() for k in logits) < 1e-4
