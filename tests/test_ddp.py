"""Two CPU processes (DDP over gloo, launched with torch.distributed.run as `accelerate launch` does on GPUs) train SFT
and LCDD to the same weights, gates and ΔW as one process with the same global batch.

On a CPU, `accelerate launch --cpu --num_processes 2` starts a single process (accelerate 1.15), so the test uses
torchrun directly; the training code sees the same environment either way."""
import json, os, socket, subprocess, sys, textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import copy, json, sys, torch
    from pathlib import Path
    from accelerate import PartialState
    from safetensors.torch import save_file
    from sft_reverse.tiny import tiny_lab, corpus_files
    from sft_reverse.data import fixed_response
    from sft_reverse.sft import sft
    from sft_reverse.carrier import make_carrier
    from sft_reverse.lcdd import lcdd
    out, bs = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    state = PartialState(cpu=not torch.cuda.is_available())   # on a CPU, the gloo process group
    base, tok = tiny_lab(progress=False)
    rows = fixed_response(corpus_files()['alpaca'], n_train=64, n_eval=8).train
    ft = copy.deepcopy(base)
    h = sft(ft, tok, rows, lr=5e-4, batch_size=bs, max_steps=4, warmup=0.0, progress=False)
    c = make_carrier(base, ft)
    r = lcdd(c, tok, rows, max_steps=6, batch_size=bs, delta_lr=5e-4, warmup_steps=2, check_every=2, progress=False)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().contiguous() for n, p in ft.named_parameters()}, str(out/'sft.safetensors'))
        save_file({n: p.detach().contiguous() for n, p in c.named_parameters() if n.endswith(('logits', 'delta'))}, str(out/'lcdd.safetensors'))
        (out/'world.txt').write_text(str(state.num_processes))
        (out/'losses.json').write_text(json.dumps([x['loss'] for x in h['history']] + [x['loss'] for x in r['history']]))
    import torch.distributed as dist
    if dist.is_initialized(): dist.barrier(); dist.destroy_process_group()   # a clean gloo shutdown before exit
''')

def test_two_process_ddp_matches_one_process(tmp_path):
    (tmp_path/'train.py').write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1', TRANSFORMERS_VERBOSITY='error')
    one = subprocess.run([sys.executable, str(tmp_path/'train.py'), str(tmp_path/'one'), '8'], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    launch = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
              '--master_port', str(port), str(tmp_path/'train.py'), str(tmp_path/'two'), '4']
    two = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path/'two'/'world.txt').read_text() == '2', "the launch did not start two processes"
    a_sft, b_sft = load_file(str(tmp_path/'one'/'sft.safetensors')), load_file(str(tmp_path/'two'/'sft.safetensors'))
    a, b = load_file(str(tmp_path/'one'/'lcdd.safetensors')), load_file(str(tmp_path/'two'/'lcdd.safetensors'))
    assert set(a_sft) == set(b_sft) and set(a) == set(b) and len(a) > 0
    assert max((a_sft[k] - b_sft[k]).abs().max().item() for k in a_sft) < 1e-5
    logits = [k for k in a if k.endswith('logits')]
    assert all(torch.equal(a[k] > 0, b[k] > 0) for k in logits)          # identical gates
    # logits and ΔW: the gate gradient is divided by a running mean of |∂L/∂m| (the sensitivity normalisation), which
    # turns float32 reduction-order noise (~1e-7) into ~1e-5 on logits of order 1; a wrong batch split gives ~1e-1
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    la, lb = (json.loads((tmp_path/d/'losses.json').read_text()) for d in ('one', 'two'))
    assert len(la) == len(lb) and max(abs(x - y) for x, y in zip(la, lb)) < 1e-4
