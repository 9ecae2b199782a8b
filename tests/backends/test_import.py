"""The sbi backend is optional: importing nlme_ppl never imports torch, and without torch the
backend says how to install it."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

_BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'sbi'):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_nlme_ppl_does_not_import_torch():
    res = _run("import sys, nlme_ppl, nlme_ppl.backends; nlme_ppl.models.get('pk_oral_1cmt'); "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sbi')))")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_without_torch_the_backend_says_how_to_install_it():
    code = _BLOCK_TORCH + """
import jax, nlme_ppl as nlp
for call in (lambda: __import__('nlme_ppl.backends.sbi'),
             lambda: nlp.train(nlp.models.pk_oral_1cmt(), jax.random.key(0), num_simulations=10, backend='sbi')):
    try:
        call()
    except ImportError as e:
        assert 'pip install "nlme_ppl[sbi]"' in str(e), str(e)
        print('refused')
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["refused", "refused"]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the [sbi] extra is not installed")
def test_an_sbi_file_reaches_the_backend_through_the_registry_only():
    # nothing imports nlme_ppl.backends.sbi until the archive registry needs its loader
    path = Path(__file__).parent / "sbi" / "data" / "pk_oral_1cmt_sbi_100k.nlp"
    res = _run("import sys, nlme_ppl as nlp\n"
               "assert not [m for m in sys.modules if m.startswith('nlme_ppl.backends.sbi') or m.split('.')[0] == 'torch']\n"
               f"post = nlp.load_posterior({str(path)!r})\n"
               "print(type(post).__name__, 'nlme_ppl.backends.sbi' in sys.modules)")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["SbiPosterior", "True"]
