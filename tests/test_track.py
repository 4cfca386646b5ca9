"""Run tracking (`RunConfig.report_to`, notebook 03c): trackio offline and TensorBoard across a killed and resumed run, each
checked against the histories the run saved; wandb in offline mode when it is installed; the trackers stay out of the core
import, and a missing one is named with its pip extra before any work starts."""
import json, os, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

from sft_reverse.config import RunConfig
from sft_reverse.track import scalars, tracker, read_tensorboard, TrackerMissing

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(task='fixed_response', n_train=48, n_eval=8, max_new_tokens=16, checkpoint_every=5, seed=0,
           sft=dict(max_steps=12, batch_size=8),
           lcdd=dict(max_steps=60, warmup_steps=6, check_every=3, batch_size=8, stall_patience=1000),
           trigger=dict(steps=30, n_prompts=16, batch_size=8),
           utility=dict(facts=dict(limit=40)))
ENV = dict(os.environ, TRANSFORMERS_VERBOSITY='error', HF_HUB_OFFLINE='1', TOKENIZERS_PARALLELISM='false')


def _cfg(d: Path, **kw) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d/'cfg.yaml').write_text(yaml.safe_dump(dict(CFG, out_dir=str(d/'out'), **kw)))
    return d/'cfg.yaml'


def _cmd(cfg, *extra):
    return [sys.executable, '-m', 'sft_reverse.experiment', 'run', str(cfg), *extra]


def _curves(out: Path, stage: str) -> dict:
    "The curves `stage`'s history.json holds: {tag: [(step, value)]}, as a tracker logs them."
    h = json.loads((out/stage/'history.json').read_text())['history']
    c = {}
    for rec in h:
        for tag, v in scalars({k: v for k, v in rec.items() if k != 'step'}, stage).items(): c.setdefault(tag, []).append((rec['step'], v))
    return c


def _same(got, want, rel=1e-6):
    assert [s for s, _ in got] == [s for s, _ in want]
    assert all(abs(a - b) <= rel*max(abs(a), abs(b)) for (_, a), (_, b) in zip(got, want)), (got[:3], want[:3])


def test_core_import_leaves_trackers_out():
    code = "import sys, sft_reverse.experiment; print([m for m in ('tensorboard', 'trackio', 'wandb') if m in sys.modules])"
    p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == '[]'


def test_bad_and_missing_trackers(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"report_to='mlflow' is not one of \('none', 'tensorboard', 'trackio', 'wandb'\)"):
        RunConfig(report_to='mlflow').validate()
    with pytest.raises(ValueError, match="is not one of"): tracker('mlflow', tmp_path)
    monkeypatch.setitem(sys.modules, 'tensorboard', None)   # as if it were not installed
    with pytest.raises(TrackerMissing, match=r'pip install "sft_reverse\[tensorboard\]"'): tracker('tensorboard', tmp_path)
    from sft_reverse.pipeline import run
    with pytest.raises(ImportError, match=r'sft_reverse\[tensorboard\]'):
        run(RunConfig(out_dir=str(tmp_path/'run'), report_to='tensorboard', **CFG), progress=False)
    assert not (tmp_path/'run'/'data').exists(), "a missing tracker stops the run before any stage"


def test_trackio_offline(tmp_path):
    "A tiny-lab run with report_to='trackio', its storage in a temporary TRACKIO_DIR: every stage's curve, read back from trackio's database."
    cfg = _cfg(tmp_path, report_to='trackio')
    env = dict(ENV, TRACKIO_DIR=str(tmp_path/'trackio'), HF_HOME=str(tmp_path/'hf'))
    env.pop('TRACKIO_SPACE_ID', None); env.pop('TRACKIO_SERVER_URL', None)
    p = subprocess.run(_cmd(cfg, '--quiet'), cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path/'out'
    res = json.loads((out/'results.json').read_text())
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage\n"
            "print(json.dumps(SQLiteStorage.get_logs('sft-reverse', sys.argv[1]), default=str))")
    q = subprocess.run([sys.executable, '-c', code, res['name']], cwd=ROOT, env=env, capture_output=True, text=True)
    assert q.returncode == 0, q.stderr[-2000:]
    rows = json.loads(q.stdout.strip().splitlines()[-1])
    for stage in ('sft', 'lcdd', 'trigger'):
        for tag, want in _curves(out, stage).items():
            _same([(r['step'], r[tag]) for r in rows if tag in r], want, rel=1e-12)
    tables = [r['results/tables'] for r in rows if 'results/tables' in r]
    assert len(tables) == 1 and tables[0]['_value'] == (out/'tables.md').read_text().rstrip('\n')
    assert [r['results/kl/sft_trig'] for r in rows if 'results/kl/sft_trig' in r] == [res['kl']['sft_trig']]
    assert (tmp_path/'trackio'/'sft-reverse.db').exists()


def test_tensorboard_resumed_run(tmp_path):
    "A run killed during LCDD and started again: TensorBoard's curves are the histories, each step once, LCDD's continued after its checkpoint."
    cfg = _cfg(tmp_path, report_to='tensorboard')
    out = tmp_path/'out'
    p = subprocess.Popen(_cmd(cfg, '--quiet'), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = lambda: [int(f.parent.name[5:]) for f in (out/'lcdd'/'ckpt').glob('step-*/state.json')]
    while max(ckpts(), default=0) < 10 and p.poll() is None: time.sleep(0.05)   # past a checkpoint or two: some records after it are on disk
    p.kill(); p.wait()
    assert not (out/'lcdd'/'stage.json').exists(), "the kill did not land during LCDD"
    r = subprocess.run(_cmd(cfg), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resuming LCDD run from' in r.stderr
    logs = read_tensorboard(out/'logs'/'tensorboard')
    for stage in ('sft', 'lcdd', 'trigger'):
        want = _curves(out, stage)
        assert sorted(want) == sorted(t for t in logs['scalars'] if t.startswith(stage + '/'))
        for tag, pts in want.items(): _same(logs['scalars'][tag], pts)
    assert len(logs['scalars']['lcdd/loss']) == json.loads((out/'results.json').read_text())['lcdd']['steps']
    assert logs['texts']['results/tables'] == (out/'tables.md').read_text().rstrip('\n')


def test_wandb_offline(tmp_path, monkeypatch):
    "With wandb installed, WANDB_MODE=offline: a run's records and tables are logged to an offline run under out/logs/wandb."
    pytest.importorskip('wandb')
    monkeypatch.setenv('WANDB_MODE', 'offline'); monkeypatch.setenv('WANDB_SILENT', 'true')
    with tracker('wandb', tmp_path, name='toy', config=dict(lr=0.1)) as t:
        for s in range(1, 4): t.log('sft', dict(step=s, loss=1/s, lr=0.1), s)
        t.log('lcdd', dict(step=1, loss=2.0, eps=None), 1)   # another stage, its own step axis from 1 again
        t.log_table('results/conditions', [dict(condition='base', rate=0.0), dict(condition='trig', rate=0.0125)])
        t.log_text('results/tables', '| a |\n|---|\n| 1 |')
        summary = dict(t.run.summary)
    assert summary['sft/loss'] == pytest.approx(1/3) and summary['lcdd/loss'] == 2.0 and summary['lcdd/step'] == 1
    runs = list((tmp_path/'logs'/'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and list(runs[0].glob('*.wandb'))
