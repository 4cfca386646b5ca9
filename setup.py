"""Packaging for sft_reverse; metadata and requirements come from settings.ini (nbdev 2)."""
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
c = cfg['DEFAULT']
reqs = c.get('requirements', '').split()
dev_reqs = c.get('dev_requirements', '').split()
extras = {k: c.get(f'{k}_requirements', '').split() for k in ('peft', 'lmeval', 'tensorboard', 'trackio', 'wandb')}   # optional: the core install stays lean
extras['track'] = extras['tensorboard'] + extras['trackio'] + extras['wandb']
extras['all'] = sorted({r for v in extras.values() for r in v})
scripts = [s.strip() for s in c.get('console_scripts', '').splitlines() if s.strip()]
readme = Path(__file__).parent/'README.md'

setuptools.setup(
    name=c['lib_name'], version=c['version'], description=c['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else c['description'],
    long_description_content_type='text/markdown',
    author=c['author'], author_email=c['author_email'], license='Apache-2.0',
    url=c['git_url'], keywords=c['keywords'].split(),
    packages=setuptools.find_packages(include=[c['lib_name'], c['lib_name'] + '.*']),
    include_package_data=True, python_requires='>=' + c['min_python'],
    install_requires=reqs, extras_require={'dev': dev_reqs, **extras},
    entry_points={'console_scripts': scripts, 'nbdev': [f"{c['lib_path']}={c['lib_path']}._modidx:d"]},
    zip_safe=False,
    classifiers=['Programming Language :: Python :: 3', 'License :: OSI Approved :: Apache Software License'],
)
