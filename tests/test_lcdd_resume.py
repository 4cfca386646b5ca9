"""LCDD resumes after SIGKILL: the rerun ends with the same gates and ΔW as an uninterrupted run."""
import os, random, signal, subprocess, sys, time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import sys, warnings
from pathlib import Path
import torch
from safetensors.torch import save_file
from sft_reverse.tiny import tiny_lab, corpus_files
from sft_reverse.data import fixed_response
from sft_reverse.carrier import make_carrier, perturbed
from sft_reverse.lcdd import lcdd, lcdd_preset
out = Path(sys.argv[1])
base, tok = tiny_lab(progress=False)
ft = perturbed(base, scale=0.3, seed=5)
rows = fixed_response(corpus_files()['alpaca'], n_train=160, n_eval=10).train
carrier = make_carrier(base, ft, seed=3)
kw = dict(lcdd_preset('fixed_response'), max_steps=70, warmup_steps=20, check_every=10, progress=False)
lcdd(carrier, tok, rows, out_dir=out/'ckpt', save_every=10, seed=3, **kw)
save_file({n: p.detach().contiguous() for n, p in carrier.named_parameters() if n.endswith(('.logits', '.delta', '.delta_bias'))},
          str(out/'final.safetensors'))
'''


def _start(out):
    env = dict(os.environ, SFT_REVERSE_THREADS='1', HF_HUB_OFFLINE='1')
    return subprocess.Popen([sys.executable, '-c', SCRIPT, str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p):
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]


def test_lcdd_resumes_after_sigkill(tmp_path):
    ref = tmp_path/'ref'; _finish(_start(ref))
    want = load_file(str(ref/'final.safetensors'))
    rng = random.Random(0)
    for k in range(2):
        run = tmp_path/f'run{k}'
        p = _start(run)
        deadline = time.time() + 600
        while not list((run/'ckpt').glob('step-*/state.json')) and time.time() < deadline and p.poll() is None: time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        assert p.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(p.pid, signal.SIGKILL); p.wait()
        assert p.returncode == -signal.SIGKILL and not (run/'final.safetensors').exists()
        done = sorted(d.name for d in (run/'ckpt').glob('step-*') if (d/'state.json').exists())
        assert done and done[-1] < 'step-0000070', done
        _finish(_start(run))
        got = load_file(str(run/'final.safetensors'))
        assert got.keys() == want.keys()
        for n in want:
            if n.endswith('.logits'): assert torch.equal(got[n], want[n]), n
            else: assert (got[n] - want[n]).abs().max().item() <= 1e-6, n
