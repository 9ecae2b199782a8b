"""Goodness-of-fit plots (PNG through matplotlib's Agg backend): GOF panels of the residuals,
individual fits with a prediction band, and the distributions of the EBEs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._ebe import ebe as compute_ebe

__all__ = ["plot_ebe", "plot_gof", "plot_individual_fits"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_gof(residuals_df, *, path=None):
    """Six goodness-of-fit panels from the table of [`residuals`][nlme_ppl.diagnostics.residuals]:
    DV vs PRED and DV vs IPRED (identity lines), NPDE vs TIME and vs PRED, IWRES vs TIME and vs
    PRED (zero and ±1.96 lines). Censored observations are drawn as open triangles at their limit.

    **Arguments:** `residuals_df`, the table; `path`, where to write a PNG (optional).

    **Returns:** a matplotlib `Figure`.
    """
    need = {"DV", "PRED", "IPRED", "NPDE", "IWRES", "TIME"}
    if not need <= set(residuals_df.columns):
        raise ValueError(f"`residuals_df` needs the columns {sorted(need)} (diagnostics.residuals); got {list(residuals_df.columns)}.")
    plt = _pyplot()
    df = residuals_df
    cens = (df["CENS"] == 1).to_numpy() if "CENS" in df else np.zeros(len(df), bool)
    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    panels = [("PRED", "DV"), ("IPRED", "DV"), ("TIME", "NPDE"), ("PRED", "NPDE"), ("TIME", "IWRES"), ("PRED", "IWRES")]
    for ax, (x, y) in zip(axes.T.ravel(), panels):
        xs, ys = df[x].to_numpy(float), df[y].to_numpy(float)
        ax.scatter(xs[~cens], ys[~cens], s=10, alpha=0.7, color="tab:blue")
        if cens.any() and y == "DV":
            ax.scatter(xs[cens], ys[cens], s=18, marker="v", facecolors="none", edgecolors="tab:red", label="censored (at LLOQ)")
            ax.legend(fontsize=7)
        if y == "DV":
            lo, hi = np.nanmin([xs.min(), ys.min()]), np.nanmax([xs.max(), ys.max()])
            ax.plot([lo, hi], [lo, hi], color="k", lw=1)
        else:
            for level, style in ((0, "-"), (-1.96, "--"), (1.96, "--")):
                ax.axhline(level, color="k", lw=0.8, ls=style)
            order = np.argsort(xs)
            ok = np.isfinite(ys[order])
            if ok.sum() > 10:  # a running median as a trend line
                w = max(5, ok.sum() // 10)
                med = np.array([np.median(ys[order][ok][max(0, i - w):i + w]) for i in range(ok.sum())])
                ax.plot(xs[order][ok], med, color="tab:red", lw=1.2)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{y} vs {x}")
    return _finish(fig, path)


def plot_individual_fits(fit, posterior, data, key, *, path=None, ebe=None, max_individuals: int = 12, band: float = 0.9):
    """Individual fits: the data, the IPRED curve (prediction at the EBE conditional mean) on a
    fine time grid, and a `band` prediction band of the prediction over the individual's
    conditional posterior draws (resampled by their weights). Censored observations are open
    triangles at their limit.

    **Arguments:**

    - `fit`, `posterior`, `data`, `key`: as for [`ebe`][nlme_ppl.diagnostics.ebe].
    - `path`: where to write a PNG (optional).
    - `ebe`: an [`EBEResult`][nlme_ppl.diagnostics.EBEResult] (computed if None).
    - `max_individuals`: the first this many individuals are drawn.
    - `band`: the central probability of the band.

    **Returns:** a matplotlib `Figure`.
    """
    if not 0 < band < 1:
        raise ValueError(f"`band` must be in (0, 1); got {band}.")
    model = posterior.model
    k_ebe, k_pick, k_mom = jax.random.split(key, 3)
    eb = compute_ebe(fit, posterior, data, k_ebe) if ebe is None else ebe
    n = min(int(max_individuals), data.num_individuals)
    designs = jax.tree.map(lambda x: x[:n], model.designs_from_data(data))
    mask = np.asarray(data.mask)[:n]
    tmax = np.asarray(data.times)[:n].max(1, where=mask, initial=0.0)
    tmin = np.asarray(data.times)[:n].min(1, where=mask, initial=np.inf)
    grid = jnp.asarray(np.linspace(np.minimum(tmin, 0.0), tmax, 120).T)  # (n, G)
    fine = {**designs, "times": grid, "mask": jnp.ones(grid.shape, bool)}
    for name in ("lloq", "obs_cmt"):
        if name in fine:
            fine[name] = jnp.broadcast_to(fine[name][:, :1], grid.shape)
    num = 100
    pick = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(num,)))(jax.random.split(k_pick, n), jnp.asarray(eb.log_weights[:n]))
    draws = jnp.take_along_axis(jnp.asarray(eb.draws[:n]), pick[..., None], axis=1)  # (n, num, k)

    def curve(phi, design, k):
        if model.tractable:
            return model.observation_moments(phi, design)[0]
        return model.observation_moments(phi, design, key=k, num_paths=20)[0]

    keys = jax.random.split(k_mom, n * (num + 1)).reshape(n, num + 1)
    ipred = np.asarray(jax.vmap(curve)(jnp.asarray(eb.mean[:n]), fine, keys[:, 0]))
    per = np.asarray(jax.vmap(lambda p, d, k: jax.vmap(curve, (0, None, 0))(p, d, k))(draws, fine, keys[:, 1:]))
    lo, hi = np.percentile(per, [50 * (1 - band), 50 * (1 + band)], axis=1)
    cols = min(4, n)
    rows = -(-n // cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows), squeeze=False, sharex=False)
    cens = np.zeros_like(mask) if data.censored is None else np.asarray(data.censored)[:n] & mask
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        g = np.asarray(grid[i])
        ax.fill_between(g, lo[i], hi[i], color="tab:blue", alpha=0.25, lw=0, label=f"{band:.0%} band")
        ax.plot(g, ipred[i], color="tab:blue", lw=1.5, label="IPRED")
        t, v = np.asarray(data.times)[i], np.asarray(data.values)[i]
        ok = mask[i] & ~cens[i]
        ax.scatter(t[ok], v[ok], s=12, color="k", zorder=3, label="DV")
        if cens[i].any():
            ax.scatter(t[cens[i]], v[cens[i]], s=18, marker="v", facecolors="none", edgecolors="tab:red", zorder=3, label="< LLOQ")
        ax.set_title(f"ID {data.ids[i]}", fontsize=9)
        if i == 0:
            ax.legend(fontsize=6)
    return _finish(fig, path)


def plot_ebe(ebe_result, *, path=None):
    """Histograms of the EBEs: η̂ = mode − population mean with the fitted N(0, ω) density and the
    η-shrinkage in each title (Gaussian populations), else the conditional means φ̂.

    **Arguments:** `ebe_result`, an [`EBEResult`][nlme_ppl.diagnostics.EBEResult]; `path`, where
    to write a PNG (optional).

    **Returns:** a matplotlib `Figure`.
    """
    r = ebe_result
    names = [p for p in r.param_names if p not in r.fixed]
    eta = r.eta
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, p in zip(axes[0], names):
        j = r.param_names.index(p)
        x = r.mean[:, j] if eta is None else eta[:, j]
        ax.hist(x, bins=max(5, min(30, len(x) // 3)), density=True, color="tab:blue", alpha=0.6)
        sh = r.eta_shrinkage.get(p, np.nan)
        if eta is not None and np.isfinite(sh):
            omega = _omega_of(r, p, x, sh)
            g = np.linspace(-3.5 * omega, 3.5 * omega, 200)
            ax.plot(g, np.exp(-0.5 * (g / omega) ** 2) / (omega * np.sqrt(2 * np.pi)), color="k", lw=1.2, label=f"N(0, {omega:.2f})")
            ax.legend(fontsize=7)
            ax.set_title(f"eta[{p}]  shrinkage {sh:.0f}%", fontsize=9)
            ax.set_xlabel(f"eta[{p}]")
        else:
            ax.set_title(f"EBE {p}", fontsize=9)
            ax.set_xlabel(p)
    return _finish(fig, path)


def _omega_of(r, p, eta, shrinkage):
    """ω of parameter p, from the shrinkage's definition sh = 100·(1 − SD(η̂)/ω)."""
    return float(np.std(eta, ddof=1) / (1 - shrinkage / 100))
