"""The persistent compilation cache of the CLI and the demo (`nlp.enable_compilation_cache`)."""

import os
import subprocess
import sys
from pathlib import Path

from nlme_ppl._cache import cache_dir

_PROBE = """
import jax, jax.numpy as jnp, nlme_ppl as nlp
print(nlp.enable_compilation_cache())
# a program with some compile time (the cache keeps every program, however fast it compiles)
f = jax.jit(lambda x: sum(jnp.linalg.eigh(x @ x.T + i * jnp.eye(30))[0].sum() * jnp.linalg.slogdet(x + i)[1] for i in range(25)))
f(jnp.ones((30, 30))).block_until_ready()
"""


def _run(env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "NLME_PPL_NO_CACHE", "XDG_CACHE_HOME")}
    env.update(env_extra)
    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    for var in ("JAX_COMPILATION_CACHE_DIR", "NLME_PPL_NO_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert cache_dir() == Path.home() / ".cache" / "nlme_ppl"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "nlme_ppl"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))  # JAX's own variable wins
    assert cache_dir() == tmp_path / "jax"
    monkeypatch.setenv("NLME_PPL_NO_CACHE", "1")
    assert cache_dir() is None


def test_compiled_programs_are_written_and_can_be_turned_off(tmp_path):
    where = tmp_path / "cache"
    assert _run({"JAX_COMPILATION_CACHE_DIR": str(where)}, tmp_path) == str(where)
    assert any(where.iterdir()), "no compiled program was written to the cache"
    off = tmp_path / "off"
    assert _run({"JAX_COMPILATION_CACHE_DIR": str(off), "NLME_PPL_NO_CACHE": "1"}, tmp_path) == "None"
    assert not off.exists() or not any(off.rglob("*")), "a program was cached with NLME_PPL_NO_CACHE=1"
