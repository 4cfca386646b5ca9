"""The fault suite: a real `sft-reverse run` in the tiny lab is killed with SIGKILL at a random point inside each
stage (SFT, LCDD, trigger training, evaluation), for 5 seeds of the kill points: 20 kills.

For each seed, one output dir goes through the whole life of a run that keeps being killed: the command is started,
killed inside SFT, started again, killed inside LCDD, started again, killed inside trigger training, started again,
killed inside evaluation, and started a last time. After every kill, every file under its real name loads (a killed
writer may leave only hidden temporaries, which the next start removes). The last start must complete, leave no
temporaries, and give a results.json identical to an uninterrupted run's (timings apart). A second uninterrupted run
from scratch shows that the run is deterministic, so "identical" is the right bar.

The run is small (a few seconds a stage) so that the 20 kills fit in CI.
"""
import json, os, random, shutil, signal, subprocess, sys, threading, time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

CFG = dict(task='fixed_response', n_train=48, n_eval=8, max_new_tokens=16, checkpoint_every=3, seed=0,
           sft=dict(max_steps=12, batch_size=8),
           lcdd=dict(max_steps=24, warmup_steps=6, check_every=3, batch_size=8, stall_patience=1000),
           trigger=dict(steps=30, n_prompts=16, batch_size=8),
           utility=dict(facts=dict(limit=40)))
STAGES = {'sft': 'sft: fine-tuning', 'lcdd': 'lcdd: crafting', 'trigger': 'trigger: training', 'eval': 'eval: the four'}
SEEDS = range(5)
ENV = dict(os.environ, TRANSFORMERS_VERBOSITY='error', HF_HUB_OFFLINE='1', TOKENIZERS_PARALLELISM='false')


def _cmd(cfg_path, quiet=True):
    return [sys.executable, '-m', 'sft_reverse.experiment', 'run', str(cfg_path)] + (['--quiet'] if quiet else [])


def _write_cfg(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    f = d/'cfg.yaml'
    f.write_text(yaml.safe_dump(dict(CFG, out_dir=str(d/'out'))))
    return f


def _comparable(results: dict) -> dict:
    "results.json without what legitimately differs between two runs: timings and the output dir."
    r = {k: v for k, v in results.items() if k != 'timings'}
    r['config'] = {k: v for k, v in r['config'].items() if k != 'out_dir'}
    return r


def _check_loads(out: Path):
    "Every file in `out` is complete: JSON parses, safetensors read fully, PNGs end, no temporaries are left."
    for f in sorted(p for p in out.rglob('*') if p.is_file()):
        assert not (f.name.startswith('.') and f.name != '.lock'), f"a temporary was left behind: {f}"
        if f.suffix == '.json': json.loads(f.read_text())
        elif f.suffix == '.safetensors':
            with safe_open(str(f), framework='pt') as s:
                for k in s.keys(): s.get_tensor(k)
        elif f.suffix in ('.yaml', '.yml'): yaml.safe_load(f.read_text())
        elif f.suffix == '.png':
            b = f.read_bytes(); assert b.startswith(b'\x89PNG') and b.rstrip().endswith(b'IEND\xaeB`\x82'), f
        elif f.suffix in ('.md', '.txt', '.jinja', '') : f.read_text(encoding='utf-8')
    for d in (p for p in out.rglob('*') if p.is_dir()):
        assert not d.name.startswith('.'), f"a temporary folder was left behind: {d}"


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "One uninterrupted run, and a second one from scratch to show the run is deterministic."
    root = tmp_path_factory.mktemp('faults')
    outs = []
    for name in ('ref', 'again'):
        cfg = _write_cfg(root/name)
        p = subprocess.run(_cmd(cfg), env=ENV, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        outs.append(root/name/'out')
    return root, outs


def test_same_config_same_results(reference):
    _, (a, b) = reference
    ra, rb = (json.loads((o/'results.json').read_text()) for o in (a, b))
    assert _comparable(ra) == _comparable(rb)
    _check_loads(a)


def _kill_in(stage: str, cfg: Path, delay: float):
    "Start the run, wait until `stage` begins, SIGKILL it `delay` seconds later; returns the stage the kill landed in (or None)."
    p = subprocess.Popen(_cmd(cfg, quiet=False), env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen, started = [], threading.Event()
    def read():
        for line in p.stderr:
            for s, msg in STAGES.items():
                if msg in line: seen.append(s)
            if stage in seen: started.set()
    t = threading.Thread(target=read, daemon=True); t.start()
    while not started.is_set() and p.poll() is None: time.sleep(0.01)
    if p.poll() is not None: t.join(); return None
    time.sleep(delay)
    landed = seen[-1] if p.poll() is None else None
    p.send_signal(signal.SIGKILL); p.wait(); t.join(timeout=5)
    return landed


def _check_complete_files(out: Path):
    "Right after a kill: every file under its real name is complete (hidden temporaries are the next run's to sweep)."
    for f in sorted(p for p in out.rglob('*') if p.is_file() and not any(x.startswith('.') for x in p.relative_to(out).parts)):
        if f.suffix == '.json': json.loads(f.read_text())
        elif f.suffix == '.safetensors':
            with safe_open(str(f), framework='pt') as s:
                for k in s.keys(): s.get_tensor(k)


def _snapshot(out: Path, snap: Path):
    "A copy of `out` as it is now (None if it does not exist yet), hidden temporaries and the lock file included."
    if snap.exists(): shutil.rmtree(snap)
    if not out.exists(): return None
    shutil.copytree(out, snap, symlinks=True)
    return snap


def _restore(snap, out: Path):
    if out.exists(): shutil.rmtree(out)
    if snap is not None: shutil.copytree(snap, out, symlinks=True)


@pytest.mark.parametrize('seed', SEEDS)
def test_kill_in_every_stage_and_rerun(reference, seed):
    "One run, killed once inside each stage in turn; each kill is followed by the same command again."
    root, (ref, _) = reference
    want = _comparable(json.loads((ref/'results.json').read_text()))
    t_ref = json.loads((ref/'results.json').read_text())['timings']
    rng = random.Random(seed)
    d = root/f"chain-s{seed}"
    cfg = _write_cfg(d)
    report = {}
    order = list(STAGES)
    for stage in STAGES:
        for attempt in range(6):
            delay = rng.uniform(0.05, 0.8)*t_ref[f"{stage}_time_s"]/(2**attempt)
            snap = _snapshot(d/'out', d/'snap')
            landed = _kill_in(stage, cfg, delay)
            if landed == stage: break
            if landed is not None and order.index(landed) > order.index(stage):
                # The stage finished before the kill (this machine ran it faster than the reference did): put the
                # output dir back as it was before this attempt and try again, sooner.
                _restore(snap, d/'out')
        else: pytest.fail(f"could not land a kill inside {stage} (seed {seed}, last delay {delay:.2f}s)")
        _check_complete_files(d/'out')
        report[stage] = round(delay, 2)
    shutil.rmtree(d/'snap', ignore_errors=True)
    p = subprocess.run(_cmd(cfg), env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, f"the rerun after the kills {report} failed:\n{p.stderr[-3000:]}"
    got = _comparable(json.loads((d/'out'/'results.json').read_text()))
    assert got == want, f"results differ from the uninterrupted run after kills at {report} s into each stage"
    _check_loads(d/'out')
    print(f"seed {seed}: killed at {report} s into each stage; the rerun completed with identical results")
