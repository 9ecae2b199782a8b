"""JAX's persistent compilation cache for the command line and the demo.

A new process pays XLA compilation for every program it runs: most of a CLI fit's time on a
small data set. With the cache, a second process reads the compiled programs from disk.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["enable_compilation_cache"]

#: Programs that compile faster than this are not written to the cache. JAX's own threshold is
#: 1 s; a CLI fit compiles about 800 programs, most of them NumPyro's single operations of a few
#: milliseconds each, which together were most of a warm process's time (Theophylline, warm
#: cache: 34.5 s with a 0.2 s threshold, 20.2 s with none). The whole fit's cache is about 7 MB.
MIN_COMPILE_SECONDS = 0.0


def cache_dir() -> Path | None:
    """Where the cache lives: `$JAX_COMPILATION_CACHE_DIR` when set, else
    `$XDG_CACHE_HOME/nlme_ppl` (default `~/.cache/nlme_ppl`); None when `NLME_PPL_NO_CACHE=1`."""
    if os.environ.get("NLME_PPL_NO_CACHE", "").strip() not in ("", "0"):
        return None
    explicit = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nlme_ppl"


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in `$JAX_COMPILATION_CACHE_DIR`, else `$XDG_CACHE_HOME/nlme_ppl`
    (the CLI and `nlme-ppl demo` call it first). Call it in your own scripts before the first
    fit to get the same speed-up in a new process. Returns the folder, or None when turned off
    (`NLME_PPL_NO_CACHE=1`) or when the folder cannot be created (then nothing is cached)."""
    import jax

    path = cache_dir()
    if path is None:  # also JAX's own cache, which JAX_COMPILATION_CACHE_DIR would otherwise turn on
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
