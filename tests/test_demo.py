"""The main job, `sft-reverse demo`, as a user runs it: the console script, offline, printing the Table 1 analogue.

Under tools/test.sh the notebooks have already run the same tiny-lab Fixed Response config into
nbs/sft_reverse_out/demo-fixed_response, so the command finds every stage done and only renders the table;
run alone, it does the whole run (a few minutes)."""
import os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_the_table_1_analogue(tmp_path):
    done = ROOT/'nbs'/'sft_reverse_out'/'demo-fixed_response'
    out = tmp_path/'demo'
    if (done/'results.json').exists(): shutil.copytree(done, out)
    exe = Path(sys.executable).with_name('sft-reverse')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'sft_reverse.experiment']
    p = subprocess.run(cmd + ['demo', '--out', str(out), '--quiet'], capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_VERBOSITY='error'))
    assert p.returncode == 0, p.stderr[-3000:]
    text = p.stdout
    assert 'fixed-response rate @Base' in text and 'KL SFT‖LCDD' in text and 'KL SFT‖Trig' in text and 'KL Base‖Trig' in text
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (Base|SFT|LCDD|Trig) \|.*$", text, re.M)}
    assert set(rows) == {'Base', 'SFT', 'LCDD', 'Trig'}, text
    rate = lambda row: float(row.split('|')[3])
    assert rate(rows['Base']) <= 5 and rate(rows['SFT']) >= 98 and rate(rows['LCDD']) >= 98 and rate(rows['Trig']) <= 5, text
    assert (out/'results.json').exists() and (out/'tables.md').exists()
