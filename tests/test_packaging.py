"""Packaging: every package the code imports is declared, and `import nlme_ppl` stays light."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "nlme_ppl"


def _top_level_imports() -> dict[str, set[str]]:
    """Top-level module name -> the package files importing it (all imports, in functions too)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    declared |= {_requirement_name(r) for r in project["optional-dependencies"]["sbi"]}
    dists = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for module, files in _top_level_imports().items():
        if module in stdlib or module == "nlme_ppl":
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_flowjax_has_an_upper_bound():
    # estimators/_flow.py reads flowjax internals: a new major version must be checked first
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (req,) = [r for r in project["dependencies"] if _requirement_name(r) == "flowjax"]
    assert "<" in req.split("#")[0], req


def test_importing_nlme_ppl_does_not_import_matplotlib():
    code = "import sys, nlme_ppl; print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'torch', 'sbi'}))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_make_test_runs_every_test_file():
    """`make test` runs the suite in groups of folders (one process each): none is left out."""
    makefile = (ROOT / "Makefile").read_text()
    block = re.search(r"^TEST_GROUPS := (.*?)\n\n", makefile, re.S | re.M)
    assert block is not None, "Makefile has no TEST_GROUPS"
    patterns = re.findall(r'"([^"]+)"', block.group(1))
    groups = [p for group in patterns for p in group.split()]
    covered: list[Path] = []
    for pattern in groups:
        covered += [p for p in ROOT.glob(pattern) if p.is_file()]
        covered += list((ROOT / pattern).rglob("test_*.py")) if (ROOT / pattern).is_dir() else []
    every = set((ROOT / "tests").rglob("test_*.py"))
    assert every - set(covered) == set(), f"test files outside TEST_GROUPS: {every - set(covered)}"
    assert len(covered) == len(set(covered)), "a test file is in two groups (it would run twice)"


def test_importing_arviz_first_keeps_numpyro_whole():
    """arviz 1.x makes `numpyro` a lazy module; importing nlme_ppl after it once left
    numpyro.distributions without `distribution`, and every `numpyro.factor` (the surrogate's
    likelihood) failed. The README's example imports arviz first."""
    code = "import arviz\nimport nlme_ppl\nimport numpyro\nassert hasattr(numpyro.distributions, 'distribution')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
