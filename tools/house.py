"""The house figures of `sft_reverse/` (issue: shared infrastructure in rooms of its own), counted with an AST walk:

- private names (`_x`) imported from another module of the package;
- functions and methods over 60 lines;
- modules over 600 lines;
- the package's import graph, with the edges the house plan forbids (data -> carrier, evals, chat and judges -> tiny, eraser -> sft).

    python tools/house.py            # the figures and what they count
    python tools/house.py --json F   # also write them as JSON
    python tools/house.py --check    # exit 1 unless every figure is zero
"""
import argparse, ast, json, sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent/'sft_reverse'
MAX_FN, MAX_MOD = 60, 600
FORBIDDEN = [('data', 'carrier'), ('evals', 'tiny'), ('chat', 'tiny'), ('judges', 'tiny'), ('eraser', 'sft')]


def _target(node):
    "The package module an import node reads from, or None for outside imports."
    if isinstance(node, ast.ImportFrom):
        if node.level == 1: return (node.module or '').split('.')[0] or None
        if node.module and node.module.split('.')[0] == 'sft_reverse':
            parts = node.module.split('.')
            return parts[1] if len(parts) > 1 else None
    return None


def figures(pkg: Path = PKG) -> dict:
    private, long_fns, long_mods, edges = [], [], [], set()
    for f in sorted(pkg.glob('*.py')):
        if f.name.startswith('_'): continue   # __init__ and nbdev's _modidx
        mod, src = f.stem, f.read_text()
        n = len(src.splitlines())
        if n > MAX_MOD: long_mods.append(dict(module=mod, lines=n))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom):
                t = _target(node)
                if t is None or t == mod: continue
                edges.add((mod, t))
                private += [dict(module=mod, source=t, name=a.name, line=node.lineno) for a in node.names if a.name.startswith('_')]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                k = node.end_lineno - node.lineno + 1
                if k > MAX_FN: long_fns.append(dict(module=mod, function=node.name, lines=k))
    forbidden = [dict(module=a, imports=b) for a, b in FORBIDDEN if (a, b) in edges]
    return dict(private_imports=private, long_functions=long_fns, long_modules=long_mods, forbidden_imports=forbidden,
                counts=dict(private_imports=len(private), long_functions=len(long_fns), long_modules=len(long_mods), forbidden_imports=len(forbidden)),
                edges=sorted(map(list, edges)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--json', default=None); p.add_argument('--check', action='store_true')
    a = p.parse_args(argv)
    r = figures()
    print('figures:', r['counts'])
    for x in r['private_imports']: print(f"  private import  {x['module']}:{x['line']} <- {x['source']}.{x['name']}")
    for x in r['long_functions']: print(f"  long function   {x['module']}.{x['function']}: {x['lines']} lines")
    for x in r['long_modules']: print(f"  long module     {x['module']}: {x['lines']} lines")
    for x in r['forbidden_imports']: print(f"  forbidden edge  {x['module']} -> {x['imports']}")
    if a.json: Path(a.json).write_text(json.dumps(r, indent=1) + '\n')
    return 1 if a.check and any(r['counts'].values()) else 0


if __name__ == '__main__':
    sys.exit(main())
