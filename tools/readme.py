"""Write README.md from nbs/index.ipynb (Quarto's nbdev_readme cannot run offline).
Markdown cells are copied as they are; code cells become ```python blocks (outputs are left out).
`python tools/readme.py --check` exits 1 if README.md is not what this would write."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
NOTE = '<!-- Written from nbs/index.ipynb by tools/readme.py; edit the notebook, then run it. -->'

def render() -> str:
    cells = json.loads((root/'nbs'/'index.ipynb').read_text(encoding='utf-8'))['cells']
    parts = []
    for c in cells:
        src = ''.join(c['source']).strip('\n')
        if not src or src.startswith('#| hide'): continue
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code': parts.append('```python\n' + '\n'.join(l for l in src.splitlines() if not l.startswith('#|')) + '\n```')
    title, _, rest = parts[0].partition('\n')
    return '\n\n'.join([title, NOTE, rest.strip('\n')] + parts[1:]) + '\n'

if __name__ == '__main__':
    text, f = render(), root/'README.md'
    if '--check' in sys.argv:
        if f.read_text(encoding='utf-8') != text:
            print('README.md is out of step with nbs/index.ipynb: run python tools/readme.py and commit README.md.'); sys.exit(1)
    else: f.write_text(text, encoding='utf-8')
