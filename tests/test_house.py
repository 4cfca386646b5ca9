"""The house plan holds (tools/house.py): no private name imported across modules, no function over 60 lines, no module over
600 lines, and none of the import edges the plan forbids (data -> carrier, evals / chat / judges -> tiny, eraser -> sft)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _house():
    spec = importlib.util.spec_from_file_location('house', ROOT/'tools'/'house.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_house_figures_are_zero():
    r = _house().figures()
    assert r['counts'] == dict(private_imports=0, long_functions=0, long_modules=0, forbidden_imports=0), \
        {k: r[k] for k in ('private_imports', 'long_functions', 'long_modules', 'forbidden_imports')}


def test_the_figures_see_a_violation(tmp_path):
    "The counter is not blind: a module that breaks each rule is counted."
    (tmp_path/'data.py').write_text("from .carrier import _private\n" + "def f():\n" + "    x = 1\n"*61 + "\n"*540)
    (tmp_path/'carrier.py').write_text("_private = 1\n")
    c = _house().figures(tmp_path)['counts']
    assert c == dict(private_imports=1, long_functions=1, long_modules=1, forbidden_imports=1), c
