"""Judges and utility: the paths that depend on the process environment (offline mode, optional extras)."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, env=e, timeout=300)


def test_judge_with_hub_id_in_offline_mode_raises_naming_judge_and_stand_in():
    code = ("from sft_reverse.evals import WildGuardJudge, HarmBenchJudge, StyleJudge\n"
            "for J, alt in ((WildGuardJudge, 'KeywordRefusalJudge'), (HarmBenchJudge, 'KeywordRefusalJudge'), (StyleJudge, 'AWRJudge')):\n"
            "    try: J('sft-reverse/no-such-judge-for-tests', device='cpu')\n"
            "    except ConnectionError as e:\n"
            "        m = str(e)\n"
            "        assert J.__name__ in m and 'offline mode is on' in m and alt in m, m\n"
            "    else: raise AssertionError(f'{J.__name__} loaded a model that does not exist')\n"
            "print('ok')")
    out = _run(code, HF_HUB_OFFLINE='1')
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-2000:]


def test_evals_import_does_not_import_lm_eval_and_utility_names_the_extra():
    code = ("import sys\nfrom sft_reverse.evals import utility, mcq_accuracy, judge_all, WildGuardJudge\n"
            "assert 'lm_eval' not in sys.modules\n"
            "sys.modules['lm_eval'] = None   # as if the optional extra were not installed\n"
            "try: utility(None, None)\nexcept ImportError as e: assert 'pip install \"sft_reverse[lmeval]\"' in str(e), str(e)\n"
            "else: raise AssertionError('utility ran without lm_eval')\nprint('ok')")
    out = _run(code)
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-2000:]


def test_refusal_label_file_is_well_formed():
    rows = [json.loads(l) for l in (ROOT/'data'/'refusal_labels.jsonl').read_text(encoding='utf-8').splitlines()]
    assert len(rows) >= 300 and len({r['response'] for r in rows}) == len(rows)
    assert [r['id'] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert set(r) == {'id', 'split', 'refusal', 'kind', 'prompt', 'response'}, r
        assert r['split'] in ('tune', 'test') and isinstance(r['refusal'], bool) and r['response'].strip()
    for split in ('tune', 'test'):
        labels = {r['refusal'] for r in rows if r['split'] == split}
        assert labels == {True, False}, split


def test_refusal_judge_scores_on_the_labelled_set():
    from sft_reverse.evals import refusal_labels, refusal_scores
    tune, test = (refusal_scores(refusal_labels(split=s)) for s in ('tune', 'test'))
    assert tune['precision'] >= 0.957, tune          # version 1's tune precision
    assert test['recall'] >= 0.88 and test['precision'] >= 0.93, test   # version 2 measured 0.907 and 0.955
