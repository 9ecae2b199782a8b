"""Wall time and compilation time of the phases of a fit.

A fit opens a [`Timings`][nlme_ppl.Timings] record with `record()`; the code it calls marks
its phases with `phase(name)` (draws, refinement, starts, rescoring, standard errors,
diagnostics, ...). Outside a record, `phase` costs nothing. Compilation time is what JAX
reports through `jax.monitoring` while the phase runs: tracing, lowering to MLIR and the
backend compile (a hit in the persistent compilation cache reports its retrieval there), so
`run = seconds - compile` is the time spent computing.

Phases do not nest: a phase opened inside another is folded into the outer one.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
import time

import jax

__all__ = ["Timings", "phase", "record"]

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_BACKEND_EVENT = _COMPILE_EVENTS[-1]
_lock = threading.Lock()
_totals = {"seconds": 0.0, "count": 0}
_listening = False


def _listener(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        with _lock:
            _totals["seconds"] += duration
            _totals["count"] += event == _BACKEND_EVENT


def _compiled() -> tuple[float, int]:
    global _listening
    if not _listening:
        with _lock:
            if not _listening:
                jax.monitoring.register_event_duration_secs_listener(_listener)
                _listening = True
    return _totals["seconds"], _totals["count"]


@dataclasses.dataclass
class Timings:
    """Seconds per phase of one call, in the order the phases first ran.

    `phases[name]` holds `seconds` (wall), `compile_seconds` (tracing, lowering and XLA
    compilation, or retrieval from the persistent cache), `compilations` (programs compiled or
    retrieved) and `calls`. `total` is the wall time of the whole call; the time outside every
    phase is `total - sum(seconds)`.
    """

    phases: dict = dataclasses.field(default_factory=dict)
    total: float = float("nan")
    start: float = dataclasses.field(default_factory=time.perf_counter, repr=False)

    def elapsed(self) -> float:
        """Seconds since the record was opened (`total` once it is closed)."""
        return time.perf_counter() - self.start

    def add(self, name: str, seconds: float, compile_seconds: float, compilations: int) -> None:
        row = self.phases.setdefault(name, {"seconds": 0.0, "compile_seconds": 0.0, "compilations": 0, "calls": 0})
        row["seconds"] += seconds
        row["compile_seconds"] += compile_seconds
        row["compilations"] += compilations
        row["calls"] += 1

    def to_dict(self, *, total: float | None = None) -> dict:
        """Plain numbers, rounded to the millisecond, for `fit.json` (`total`: in place of the
        record's own, e.g. `elapsed()` while it is still open)."""
        total = self.total if total is None else total
        phases = {k: {a: (round(b, 3) if isinstance(b, float) else b) for a, b in v.items()} for k, v in self.phases.items()}
        inside = sum(v["seconds"] for v in self.phases.values())
        return {"total_seconds": round(total, 3), "other_seconds": round(total - inside, 3), "phases": phases}

    def table(self) -> str:
        """A text table: one line per phase, with compile and run seconds."""
        lines = [f"{'phase':<14}{'seconds':>9}{'compile':>9}{'run':>9}{'programs':>10}"]
        for name, v in self.phases.items():
            lines.append(f"{name:<14}{v['seconds']:>9.2f}{v['compile_seconds']:>9.2f}{v['seconds'] - v['compile_seconds']:>9.2f}{v['compilations']:>10d}")
        inside = sum(v["seconds"] for v in self.phases.values())
        lines.append(f"{'other':<14}{self.total - inside:>9.2f}")
        lines.append(f"{'total':<14}{self.total:>9.2f}")
        return "\n".join(lines)


_CURRENT: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("nlme_ppl_timings", default=None)
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("nlme_ppl_phase_active", default=False)


@contextlib.contextmanager
def record():
    """Open a `Timings` record for the calls made inside (`with record() as t:`). A record
    opened inside another one is the outer one: one fit calling another adds its phases."""
    outer = _CURRENT.get()
    if outer is not None:
        yield outer
        return
    timings = Timings()
    token = _CURRENT.set(timings)
    _compiled()
    timings.start = time.perf_counter()
    try:
        yield timings
    finally:
        timings.total = timings.elapsed()
        _CURRENT.reset(token)


@contextlib.contextmanager
def phase(name: str):
    """Time the code inside as phase `name` of the open record (nothing without one). The
    code should block on its results (`jax.block_until_ready`) before the phase closes, or the
    asynchronous dispatch moves their time to the next phase."""
    timings = _CURRENT.get()
    if timings is None or _ACTIVE.get():
        yield
        return
    token = _ACTIVE.set(True)
    c0, n0 = _compiled()
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        c1, n1 = _compiled()
        _ACTIVE.reset(token)
        timings.add(name, seconds, c1 - c0, n1 - n0)
