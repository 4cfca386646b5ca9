"""Golden training histories: the safety net for moving the training loops (issue: one training loop with callbacks).

`record` runs, on CPU in float32 with fixed seeds, one short tiny-lab run of each loop and writes every per-step
record: SFT, LCDD in its three modes (joint, mask_ce, mask_kl) and the trigger (circuit). `compare` runs them again
and checks every number of every step against the recording, within a relative tolerance.

    python tools/golden.py record sft_reverse_out/golden.json
    python tools/golden.py compare sft_reverse_out/golden.json [--rtol 1e-5]
"""
import argparse, copy, json, math, sys, warnings
from pathlib import Path


def histories() -> dict:
    from sft_reverse.experiment import RunConfig, resolve, load_model
    from sft_reverse.data import build_task
    from sft_reverse.sft import sft
    from sft_reverse.carrier import make_carrier
    from sft_reverse.lcdd import lcdd
    from sft_reverse.eraser import train_trigger
    from sft_reverse.tiny import set_threads
    set_threads(1)
    res = resolve(RunConfig(n_train=64, n_eval=8))
    task = build_task(res['task'], **res['data'], n_train=64, n_eval=8, seed=0)
    base, tok = load_model('tiny', progress=False)
    ft = copy.deepcopy(base)
    out = dict(sft=sft(ft, tok, task.train, lr=1e-3, max_steps=12, batch_size=8, seed=0, progress=False)['history'])
    carriers = {}
    for mode, steps in (('joint', 40), ('mask_ce', 20), ('mask_kl', 20)):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore'); c = make_carrier(base, ft, seed=0)
        r = lcdd(c, tok, task.train, mode=mode, ft=ft if mode == 'mask_kl' else None, max_steps=steps, batch_size=8, max_len=128,
                 delta_lr=1e-3, gate_lr=0.5, warmup_steps=10, check_every=10, seed=0, progress=False)
        out[f'lcdd_{mode}'] = r['history']
        carriers[mode] = c
    t = train_trigger(carriers['joint'], base, tok, [r['prompt'] for r in task.train], steps=30, n_prompts=32, batch_size=8,
                      seed=0, progress=False)
    out['trigger'] = t['history']
    out['trigger_final'] = [t['trigger'].emb.detach().double().abs().sum().item()]
    return out


def _numbers(x, path=''):
    "Every number in a nested record, by path."
    if isinstance(x, dict):
        for k, v in x.items(): yield from _numbers(v, f'{path}.{k}')
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x): yield from _numbers(v, f'{path}[{i}]')
    elif isinstance(x, (int, float)) and not isinstance(x, bool): yield path, float(x)


def compare(want: dict, got: dict, rtol: float) -> list:
    "The differences between two recordings: missing loops, different lengths, numbers outside rtol."
    bad = []
    for k in want:
        if k not in got: bad.append(f'{k}: missing'); continue
        a, b = dict(_numbers(want[k])), dict(_numbers(got[k]))
        if a.keys() != b.keys(): bad.append(f'{k}: different records ({len(a)} against {len(b)} numbers)'); continue
        for p, v in a.items():
            w = b[p]
            if not (math.isclose(v, w, rel_tol=rtol, abs_tol=rtol*1e-3) or (math.isnan(v) and math.isnan(w))):
                bad.append(f'{k}{p}: {v!r} recorded, {w!r} now')
    return bad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('cmd', choices=['record', 'compare']); p.add_argument('path'); p.add_argument('--rtol', type=float, default=1e-5)
    a = p.parse_args(argv)
    got = histories()
    if a.cmd == 'record':
        Path(a.path).parent.mkdir(parents=True, exist_ok=True)
        Path(a.path).write_text(json.dumps(got) + '\n')
        print({k: len(v) for k, v in got.items()})
        return 0
    bad = compare(json.loads(Path(a.path).read_text()), got, a.rtol)
    print(f"{len(bad)} differences" + (':' if bad else '') + ''.join(f'\n  {b}' for b in bad[:40]))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
