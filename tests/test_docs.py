"""The documentation builds with mkdocs --strict: every API reference and image link resolves."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None, reason="mkdocs not installed ([dev] extra)")
def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the maths is typeset by MathJax: arithmatex marks it up, and every page loads the config
    # and the loader (docs/javascripts; the local MathJax copy is made by `make docs`)
    page = (tmp_path / "site" / "guide" / "models" / "index.html").read_text()
    assert '<div class="arithmatex">\\[' in page  # display maths, in MathJax's delimiters
    for script in ("javascripts/mathjax.js", "javascripts/mathjax-loader.js"):
        assert script in page, script
    # the docstrings are Markdown with **Arguments:** headings, rendered as such (not Google sections)
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "<p><strong>Arguments:</strong></p>" in api


_PUBLIC_PATHS = r"""
import importlib, sys
bad = []
for path in sys.argv[1:]:
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], start=2):
        if name in getattr(obj, "__all__", ()):
            obj = getattr(obj, name)
            continue
        try:
            sub = importlib.import_module(".".join(parts[:i]))
        except ImportError as e:
            missing = next((x for x in (e, e.__cause__, e.__context__) if isinstance(x, ModuleNotFoundError)), None)
            if missing is not None and (missing.name or "").split(".")[0] in ("torch", "sbi"):
                break  # the [sbi] extra is not installed here: the path cannot be checked
            sub = None
        if sub is None or not hasattr(sub, "__path__"):
            bad.append(path)
            break
        obj = sub
print(bad)
"""


def test_api_page_cites_public_paths_only():
    # every `::: path` of docs/api.md is public: each step of the path is listed in its parent's
    # `__all__` or is a subpackage (the optional nlme_ppl.backends.sbi), starting from `nlme_ppl`
    # (e.g. nlme_ppl.models.pk_oral_1cmt, not nlme_ppl.models.pk.pk_oral_1cmt). In its own
    # process: the sbi backend's paths import torch, which must not enter this suite's process.
    paths = [line[4:].strip() for line in (ROOT / "docs" / "api.md").read_text().splitlines() if line.startswith("::: ")]
    res = subprocess.run([sys.executable, "-c", _PUBLIC_PATHS, *paths], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", f"docs/api.md cites non-public paths: {res.stdout.strip()}"
