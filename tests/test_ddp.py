"""Two CPU processes under `accelerate launch` (DDP, gloo) train SFT and LCDD to the same weights, gates and ΔW
as one process with the same global batch."""
import os, subprocess, sys, textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import copy, sys, torch
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
    state = PartialState()
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
        (out/'losses.txt').write_text(repr([x['loss'] for x in h['history']] + [x['loss'] for x in r['history']]))
''')

def test_two_process_ddp_matches_one_process(tmp_path):
    (tmp_path/'train.py').write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1', TRANSFORMERS_VERBOSITY='error')
    one = subprocess.run([sys.executable, str(tmp_path/'train.py'), str(tmp_path/'one'), '8'], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, '-m', 'accelerate.commands.launch', '--cpu', '--num_processes', '2', '--num_machines', '1',
              '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29517',
              str(tmp_path/'train.py'), str(tmp_path/'two'), '4']
    two = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a_sft, b_sft = load_file(str(tmp_path/'one'/'sft.safetensors')), load_file(str(tmp_path/'two'/'sft.safetensors'))
    a, b = load_file(str(tmp_path/'one'/'lcdd.safetensors')), load_file(str(tmp_path/'two'/'lcdd.safetensors'))
    assert set(a_sft) == set(b_sft) and set(a) == set(b) and len(a) > 0
    assert max((a_sft[k] - b_sft[k]).abs().max().item() for k in a_sft) < 1e-5
    logits = [k for k in a if k.endswith('logits')]
    assert all(torch.equal(a[k] > 0, b[k] > 0) for k in logits)          # identical gates
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5       # logits and ΔW
    la, lb = eval((tmp_path/'one'/'losses.txt').read_text()), eval((tmp_path/'two'/'losses.txt').read_text())
    assert len(la) == len(lb) and max(abs(x - y) for x, y in zip(la, lb)) < 1e-4
