"""The tiny lab's cache under concurrency: two processes asking at once build it once."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = "dict(steps=4, batch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1, head_dim=8)"


def _run(cache, code):
    env = dict(os.environ, SFT_REVERSE_CACHE=str(cache), SFT_REVERSE_THREADS='1')
    return subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_build_the_lab_once(tmp_path):
    code = ("import torch; from sft_reverse.tiny import tiny_lab\n"
            f"m, t = tiny_lab(progress=False, **{SMALL})\n"
            "print(sum(float(p.double().sum()) for p in m.parameters()), len(t))")
    procs = [_run(tmp_path, code) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    builds = sum(err.count('Building the tiny lab') for _, err in outs)
    assert builds == 1, f"expected one build, saw {builds}"
    assert outs[0][0] == outs[1][0], "both processes must load identical weights and tokenizer"
    labs = [d for d in (tmp_path/'tiny_lab').iterdir() if not d.name.startswith('.')]
    assert len(labs) == 1 and (labs[0]/'lab.json').exists()
    assert not [d for d in (tmp_path/'tiny_lab').iterdir() if d.is_dir() and d.name.startswith('.')], "no temp build folder left"


def test_rebuild_is_deterministic(tmp_path):
    code = ("from sft_reverse.tiny import tiny_lab\n"
            f"m, t = tiny_lab(progress=False, rebuild=True, **{SMALL})\n"
            "print(sum(float(p.double().sum()) for p in m.parameters()))")
    a = _run(tmp_path, code).communicate(timeout=600)[0]
    b = _run(tmp_path, code).communicate(timeout=600)[0]
    assert a and a == b
