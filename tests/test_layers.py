"""The import graph of the package: no cycle, and imports run down the layers of DESIGN.md.

Every import counts: at module level, inside functions and under `if TYPE_CHECKING:`. An import
`from X import name` depends on the module `X.name` where that is a module, else on `X`.
The layer order (docs/guide/architecture.md) is the order in which data flows.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "nlme_ppl"

# lowest first; a module may import only from its own layer or the layers before it
LAYERS: list[tuple[str, ...]] = [
    ("nlme_ppl._validate", "nlme_ppl._version", "nlme_ppl._sites", "nlme_ppl._lse", "nlme_ppl._cache", "nlme_ppl._sharding", "nlme_ppl._timing", "nlme_ppl._buffers"),  # shared checks; _sites reads population sites; _lse: the fused kernel; devices; phase timings
    ("nlme_ppl.data", "nlme_ppl._doses"),  # the containers (Doses lives in its own module)
    ("nlme_ppl.io.serialization",),  # the estimator-archive format and the backend registry
    ("nlme_ppl.models",),
    ("nlme_ppl.designs",),
    ("nlme_ppl.simulation", "nlme_ppl._distributed", "nlme_ppl._population_draws"),  # prior predictive; its dask runner; draws from population programs
    ("nlme_ppl.estimators", "nlme_ppl.backends"),  # a backend is an estimator, reached only by the registry
    ("nlme_ppl._draws", "nlme_ppl.likelihood"),  # the surrogate's draws, and the handler
    ("nlme_ppl.populations", "nlme_ppl._covariate_forms", "nlme_ppl._bounded_normal"),  # population programs, their covariate forms and bounded prior
    ("nlme_ppl.diagnostics",),
    ("nlme_ppl.inference",),
    ("nlme_ppl.io",),  # the readers and the report
    ("nlme_ppl.demo", "nlme_ppl.cli", "nlme_ppl._cli_vae", "nlme_ppl._cli_train", "nlme_ppl.pretrained", "nlme_ppl"),
]

# the named exceptions to the layer order (at most one), each with its reason
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _edges() -> set[tuple[str, str]]:
    mods = _modules()
    edges = set()
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                if t.split(".")[0] == "nlme_ppl" and t != name:
                    while t not in mods and "." in t:
                        t = t.rpartition(".")[0]
                    edges.add((name, t))
    return edges


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to the docs' layer table)"
    return best


def _cycles(edges) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _is_reexport(a: str, b: str) -> bool:
    """A package's `__init__` importing its own submodules is the public API, not a dependency."""
    return b.startswith(a + ".")


def test_no_import_cycle():
    edges = {(a, b) for a, b in _edges() if not _is_reexport(a, b)}
    assert _cycles(edges) == []


def test_imports_run_down_the_layers():
    upward = sorted((a, b) for a, b in _edges() if not _is_reexport(a, b) and _layer(b) > _layer(a))
    assert len(ALLOWED_UPWARD) <= 1
    assert [e for e in upward if e not in ALLOWED_UPWARD] == []


def test_the_analysis_sees_imports_inside_functions(tmp_path):
    # the test itself must be able to fail: an import inside a function is an edge
    src = "def f():\n    from ..inference import fit_map\n"
    tree = ast.parse(src)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "inference" for n in ast.walk(tree))
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a")}) == [["a", "b", "c"]]


def test_no_module_imports_a_backend_but_through_the_registry():
    # the registry (nlme_ppl.io.serialization) names a backend's module as a string and imports it
    # with importlib on first use; no static import of nlme_ppl.backends.* outside the backends
    direct = sorted((a, b) for a, b in _edges() if b.startswith("nlme_ppl.backends") and not a.startswith("nlme_ppl.backends"))
    assert direct == []
