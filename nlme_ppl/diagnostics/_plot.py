"""ECDF-difference plot of SBC ranks with the simultaneous band (matplotlib, no global state)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not with nlme_ppl
    from matplotlib.figure import Figure

__all__ = ["plot_sbc"]

_PASS, _FAIL = "#1a7f37", "#cf222e"


def plot_sbc(result, path: str | Path | None = None, *, ncols: int = 3) -> Figure:
    """Draw `result` (an `SBCResult`) one panel per parameter; save to `path` if given.

    Uses `matplotlib.figure.Figure` directly (the Agg canvas), so it neither needs a display
    nor touches pyplot's global state.
    """
    k = len(result.param_names)
    ncols = max(1, min(int(ncols), k))
    nrows = math.ceil(k / ncols)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * ncols, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    # Pad with the end points 0 and 1, where ECDF, band and identity all agree.
    z = np.concatenate(([0.0], result.eval_points, [1.0]))
    lo = np.concatenate(([0.0], result.band_lower, [1.0])) - z
    hi = np.concatenate(([0.0], result.band_upper, [1.0])) - z
    for j, (ax, name) in enumerate(zip(axes, result.param_names)):
        ok = result.passed[name]
        diff = np.concatenate(([0.0], result.ecdf[j], [1.0])) - z
        ax.fill_between(z, lo, hi, color="0.6", alpha=0.35, linewidth=0, label=f"{result.prob:.0%} simultaneous band")
        ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
        ax.plot(z, diff, color=_PASS if ok else _FAIL, linewidth=1.4, label="rank ECDF − uniform")
        ax.set_title(
            f"{name}: {'PASS' if ok else 'FAIL'}  (max |Δ| {result.max_deviation[name]:.3f})",
            color=_PASS if ok else _FAIL,
            fontsize=10,
        )
        ax.set_xlim(0.0, 1.0)
    for ax in axes[k:]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * ncols : k]:
        ax.set_xlabel("fractional rank")
    for ax in axes[::ncols]:
        ax.set_ylabel("ECDF difference")
    axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    fig.suptitle(
        f"SBC: {result.num_simulations} simulations, {result.num_draws} posterior draws each "
        f"({sum(result.passed.values())}/{k} parameters pass)",
        fontsize=11,
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
