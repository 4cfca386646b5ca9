"""Mixed precision in the three training loops (SFT, LCDD, trigger).

On a CPU: bf16 autocast trains (finite, falling losses; weights, gates, ΔW and the trigger stay float32), and fp16 or an
unknown setting is refused with a clear error before anything changes. With CUDA visible, the same loops also run in
fp16 with loss scaling and their losses track the float32 run's."""
import copy

import pytest
import torch

from sft_reverse.tiny import tiny_lab, corpus_files
from sft_reverse.data import fixed_response, collate, encode_chat
from sft_reverse.sft import sft, check_mixed_precision
from sft_reverse.carrier import make_carrier, perturbed
from sft_reverse.lcdd import lcdd, lcdd_preset
from sft_reverse.eraser import train_trigger
from sft_reverse.experiment import RunConfig

CUDA = torch.cuda.is_available()


@pytest.fixture(scope='module')
def lab():
    base, tok = tiny_lab(progress=False)
    task = fixed_response(corpus_files()['alpaca'], n_train=48, n_eval=8)   # the first 48 rows: a short, fixed set
    return base, tok, task


def _train_all(lab, mp, device='cpu', steps=(8, 12, 10)):
    "SFT, LCDD and trigger training of the tiny lab under `mp`; returns the three loss histories and the trained objects."
    base, tok, task = lab
    base = copy.deepcopy(base).to(device)
    ft = copy.deepcopy(base)
    h = sft(ft, tok, task.train, lr=5e-4, batch_size=8, max_steps=steps[0], warmup=0.0, mixed_precision=mp, progress=False)
    c = make_carrier(base, ft)
    kw = dict(lcdd_preset('fixed_response'), max_steps=steps[1], warmup_steps=2, check_every=3, batch_size=8)
    r = lcdd(c, tok, task.train, mixed_precision=mp, progress=False, **kw)
    t = train_trigger(c, base, tok, task.prompts('train'), steps=steps[2], n_prompts=16, batch_size=8, mixed_precision=mp, progress=False)
    return dict(sft=[x['loss'] for x in h['history']], lcdd=[x['loss'] for x in r['history']],
                trigger=[x['loss'] for x in t['history']], ft=ft, carrier=c, trigger_emb=t['trigger'].emb)


def _check(run):
    for k in ('sft', 'lcdd', 'trigger'):
        assert all(torch.isfinite(torch.tensor(run[k]))), f"{k} has a non-finite loss: {run[k]}"
    assert run['sft'][-1] < run['sft'][0], run['sft']
    assert run['trigger'][-1] < run['trigger'][0], run['trigger']
    assert all(p.dtype == torch.float32 for p in run['ft'].parameters())
    assert all(p.dtype == torch.float32 for n, p in run['carrier'].named_parameters() if n.endswith(('logits', 'delta')))
    assert run['trigger_emb'].dtype == torch.float32


def test_bf16_autocast_trains_on_cpu(lab):
    _check(_train_all(lab, 'bf16', steps=(4, 6, 5)))   # bf16 on a CPU is slow: a few steps of each


@pytest.mark.parametrize('mp', ['fp16', 'fp8', 'yes'])
def test_bad_mixed_precision_is_refused_before_training(lab, mp):
    base, tok, task = lab
    if mp == 'fp16' and CUDA: pytest.skip('fp16 is allowed where CUDA is visible')
    want = 'needs a CUDA device' if mp == 'fp16' else 'mixed_precision must be one of'
    ft = copy.deepcopy(base)
    before = {n: p.detach().clone() for n, p in ft.named_parameters()}
    with pytest.raises(ValueError, match=want): sft(ft, tok, task.train, max_steps=2, mixed_precision=mp, progress=False)
    assert all(torch.equal(before[n], p) for n, p in ft.named_parameters()), "a refused run changed the model"
    c = make_carrier(base, ft)
    with pytest.raises(ValueError, match=want): lcdd(c, tok, task.train, max_steps=2, mixed_precision=mp, progress=False)
    with pytest.raises(ValueError, match=want): train_trigger(c, base, tok, task.prompts('train'), steps=2, mixed_precision=mp, progress=False)
    with pytest.raises(ValueError, match='mixed_precision'): RunConfig(mixed_precision=mp).validate()


def test_check_mixed_precision():
    assert check_mixed_precision('no', 'cpu') == 'no' and check_mixed_precision('bf16', 'cpu') == 'bf16'
    assert check_mixed_precision('fp16', 'cuda') == 'fp16'


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
@pytest.mark.parametrize('mp', ['bf16', 'fp16'])
def test_cuda_mixed_precision_tracks_float32(lab, mp):
    ref, run = _train_all(lab, 'no', 'cuda'), _train_all(lab, mp, 'cuda')
    _check(run)
    for k in ('sft', 'lcdd', 'trigger'):   # same data and seeds: the curves agree to the precision of the matmuls
        rel = max(abs(a - b)/max(abs(a), 1e-3) for a, b in zip(ref[k], run[k]))
        print(f"{mp} {k}: max relative loss difference to float32 {rel:.3g}")
        assert rel < 0.25, f"{mp} {k} losses drift from float32: {ref[k]} vs {run[k]}"


def test_fp16_overflow_step_changes_nothing(lab):
    "LCDD's update under loss scaling (a CPU GradScaler stands in for CUDA's): an inf gradient skips the step, gates, ΔW and EMA included."
    from sft_reverse.lcdd import _lcdd_update, _lcdd_params
    base, tok, task = lab
    c = make_carrier(base, perturbed(base))   # ΔW ≠ 0, so the gates get task gradients
    gates, deltas = _lcdd_params(c, 'joint')
    trainable = [g.logits for g in gates] + [p for _, p in deltas if p.requires_grad]
    g_opt = torch.optim.SGD([g.logits for g in gates], lr=0.1)
    d_opt = torch.optim.AdamW([p for _, p in deltas if p.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    batch = collate([encode_chat(tok, r['prompt'], r['response']) for r in task.train[:4]], tok.pad_token_id)
    def backward(poison):
        for p in trainable: p.grad = None
        scaler.scale(c(**batch).loss).backward()
        if poison: trainable[-1].grad.view(-1)[0] = float('inf')
    before = [p.detach().clone() for p in trainable]
    backward(poison=True)
    ema = _lcdd_update(gates, trainable, g_opt, d_opt, scaler, 1.0, 1.0, 'sensitivity', 'untouched')
    assert ema == 'untouched' and all(torch.equal(a, p) for a, p in zip(before, trainable)), "an overflowed step changed something"
    assert scaler.get_scale() == 2.**9, scaler.get_scale()
    backward(poison=False)
    ema = _lcdd_update(gates, trainable, g_opt, d_opt, scaler, 1.0, 1.0, 'sensitivity', None)
    assert ema is not None and any(not torch.equal(a, p) for a, p in zip(before, trainable)), "a finite step was skipped"
