"""Suite-wide fixtures."""

import gc

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every loaded XLA executable holds a few memory mappings, and a process may have at most
    `vm.max_map_count` of them (65,530 by default on Linux). Past it, XLA's next compilation
    fails to map memory and the process dies in a segfault or a `MemoryError`. One pytest
    process running tests/inference and tests/models reached that limit; tests/inference alone
    held 41,000 mappings after 53 of its 73 tests and 57,415 at its end (29,983 with this fixture). Clearing the caches frees them (300 small programs: 1,365
    mappings, then 483 after `jax.clear_caches()`). The price is that each module compiles its
    own programs."""
    yield
    jax.clear_caches()
    gc.collect()
