"""Cost of loading a large gateway.yaml (3,000 routes): fastgate's loader, which composes
with libyaml's parser (PyYAML's CSafeLoader) when PyYAML has it, against the same YAML 1.2
loader on PyYAML's pure-Python parser (the baseline it replaced).

Run: .venv/bin/python -m pytest -q -p no:cacheprovider -o python_files='bench_*.py' \
         bench/bench_config.py --benchmark-only
"""
import yaml

from fastgate.compile import config
from fastgate.compile.config import source

LISTEN = "listeners:\n  - address: 127.0.0.1:8080\n"
ROUTES = "".join(f"  - path: /r{i}/{{id}}\n    method: GET\n    integration: {{type: echo}}\n"
                 for i in range(3000))
TEXT = LISTEN + "routes:\n" + ROUTES


class PurePythonLoader(yaml.SafeLoader):
    """source._Loader's YAML 1.2 resolvers on the pure-Python parser."""
    yaml_implicit_resolvers = source._Loader.yaml_implicit_resolvers


def test_load_large_config(benchmark):
    loaded = benchmark(config.load_config_text, TEXT, "big.yaml")
    assert len(loaded.config.routes) == 3000


def test_compose_pure_python_baseline(benchmark):
    benchmark(yaml.compose, TEXT, Loader=PurePythonLoader)


def test_compose_libyaml(benchmark):
    benchmark(yaml.compose, TEXT, Loader=source._Loader)
