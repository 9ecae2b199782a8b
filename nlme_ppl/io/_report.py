"""One self-contained HTML report of a population fit: estimates, objective, surrogate and MCMC
diagnostics, goodness-of-fit plots, VPC, individual fits, EBEs and a model comparison."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from . import _html as h

__all__ = ["ReportWarning", "SECTIONS", "fit_from_dir", "report", "report_from_dir"]

#: The sections of every report, in order: `(id, title)`. Each is an `<h2>` with that `id`.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("parameters", "Population parameters"),
    ("objective", "Objective function"),
    ("surrogate", "Surrogate diagnostics"),
    ("mcmc", "MCMC diagnostics"),
    ("gof", "Goodness of fit"),
    ("vpc", "Visual predictive check"),
    ("individual-fits", "Individual fits"),
    ("ebe", "Empirical Bayes estimates"),
    ("comparison", "Model comparison"),
)


class ReportWarning(UserWarning):
    """A report section could not be computed; the report says why in that section."""


class _Missing(Exception):
    """A section's input is absent: its message is shown in place of the section."""


class _Context:
    """What the sections share, computed once on first use (the EBEs feed four of them)."""

    def __init__(self, fit, posterior, data, key, idata, fits, settings):
        self.fit, self.posterior, self.data, self.idata, self.fits = fit, posterior, data, idata, fits
        self.num_simulations, self.num_replicates, self.num_ebe_draws, self.max_individuals = settings
        # one key per section that simulates, split deterministically from `key`
        self.keys = dict(zip(("ebe", "residuals", "vpc", "individual-fits"), jax.random.split(key, 4)))
        self.keys["comparison"] = jax.random.fold_in(key, 5)  # the LOO draws of `compare`
        self._cache: dict = {}

    def _need_posterior(self, what: str):
        if self.posterior is None:
            raise _Missing(f"{what} needs the estimator that was fitted: pass posterior= to report().")
        return self.posterior

    def _diagnostic(self, name: str) -> Callable:
        from .. import diagnostics

        fn = getattr(diagnostics, name, None)
        if fn is None:
            raise _Missing(f"nlme_ppl.diagnostics.{name} is not available in this version of nlme_ppl.")
        return fn

    def ebe(self):
        if "ebe" not in self._cache:
            post = self._need_posterior("the empirical Bayes estimates")
            self._cache["ebe"] = self._diagnostic("ebe")(self.fit, post, self.data, self.keys["ebe"], num_draws=self.num_ebe_draws)
        return self._cache["ebe"]

    def residuals(self) -> pd.DataFrame:
        if "residuals" not in self._cache:
            post = self._need_posterior("the residuals")
            fn = self._diagnostic("residuals")
            self._cache["residuals"] = fn(self.fit, post, self.data, self.keys["residuals"], num_simulations=self.num_simulations, ebe=self.ebe())
        return self._cache["residuals"]


# ---------------------------------------------------------------------------------- sections
def _parameters(ctx: _Context) -> str:
    table = ctx.fit.table()
    out = []
    try:
        shrink = ctx.ebe().eta_shrinkage
    except _Missing as e:
        shrink, out = {}, [h.note(f"η-shrinkage not shown: {e}")]
    table = table.assign(shrinkage_percent=[shrink.get(_sd_name(label), np.nan) for label in table.index])
    out.insert(0, h.table(table, table_id="parameter-table"))
    out.append('<p class="meta">estimate and SE on the model scale (log scale for positive quantities); ci_lower/ci_upper: Wald '
               "interval; value: exp(estimate) of a mean; cv_percent: 100·sqrt(exp(sd²) − 1) of an sd; shrinkage_percent: η-shrinkage "
               "(NONMEM's SD definition) of that random effect.</p>")  # fmt: skip
    return "\n".join(out)


def _sd_name(label: str) -> str:
    return label[3:-1] if label.startswith("sd[") and label.endswith("]") else ""


def _objective(ctx: _Context) -> str:
    fit = ctx.fit
    rows = {"surrogate log-likelihood (relative to the training prior's marginal)": fit.log_likelihood,
            "population parameters estimated": len(fit.params), "individuals": len(fit.ids)}  # fmt: skip
    absolute = getattr(fit, "absolute", None)
    if absolute is None:
        return h.kv_table(rows) + h.note("the absolute log-likelihood (OFV, AIC, BIC) was not computed for this fit: it needs a "
                                         "tractable model; the surrogate's value is relative and compares population models only.")  # fmt: skip
    values = absolute.to_dict() if hasattr(absolute, "to_dict") else {k: getattr(absolute, k) for k in ("loglik", "ofv", "aic", "bic")}
    return h.kv_table({**rows, **values}, table_id="objective-table")


def _surrogate(ctx: _Context) -> str:
    import matplotlib.pyplot as plt

    fit = ctx.fit
    summary, per_individual = fit.diagnostics_summary(), fit.diagnostics_table()
    out = [h.kv_table(summary)]
    if "pareto_k" in per_individual:
        k = per_individual["pareto_k"].to_numpy(float)
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ax.scatter(np.arange(k.size), np.clip(k, -0.5, 2.0), s=14, c=np.where(k > 0.7, "#cf222e", "#0b5394"))
        ax.axhline(0.7, color="#cf222e", lw=0.8, ls="--")
        ax.set(xlabel="individual (data order)", ylabel="Pareto k̂", title="Importance-weight Pareto k̂ at the estimate (clipped to [-0.5, 2])")
        out.append(h.figure_img(fig, alt="Pareto k of each individual"))
    out.append(h.table(per_individual, scroll=True))
    return "\n".join(out)


def _mcmc(ctx: _Context) -> str:
    import arviz as az

    if ctx.idata is None:
        raise _Missing("no NUTS fit given (pass idata=, or fit with --method nuts): MCMC diagnostics are shown for NUTS fits only.")
    tree = ctx.idata
    names = [v for v in ("mean", "sd") if v in tree.posterior]
    summary = az.summary(tree, var_names=names)
    div = int(np.asarray(tree.sample_stats["diverging"]).sum()) if "sample_stats" in tree.children else 0
    sizes = tree.posterior.sizes
    out = [f"<p>{sizes['chain']} chain(s) × {sizes['draw']} draws; {div} divergent transition(s).</p>", h.table(summary, table_id="mcmc-table")]
    out.append(h.figure_img(az.plot_trace_dist(tree, var_names=names).viz["figure"].item(), alt="trace plots"))
    out.append(h.figure_img(az.plot_rank(tree, var_names=names).viz["figure"].item(), alt="rank plots"))
    if "posterior_predictive" in tree.children:
        out.append(h.figure_img(az.plot_ppc_dist(tree).viz["figure"].item(), alt="posterior predictive check"))
    return "\n".join(out)


def _gof(ctx: _Context) -> str:
    res = ctx.residuals()
    cols = [c for c in ("IWRES", "NPDE", "CWRES") if c in res]
    stats = res[cols].agg(["mean", "std"]).T.rename(columns={"std": "sd"})
    out = [h.table(stats), h.figure_img(ctx._diagnostic("plot_gof")(res), alt="goodness-of-fit panels")]
    eps = res.attrs.get("epsilon_shrinkage")
    if eps is not None:
        out.insert(1, f"<p>ε-shrinkage: {float(np.asarray(eps)):.1f}%</p>" if np.ndim(eps) == 0 else h.kv_table({"epsilon_shrinkage_percent": eps}))
    return "\n".join(out)


def _vpc(ctx: _Context) -> str:
    post = ctx._need_posterior("the VPC")
    result = ctx._diagnostic("vpc")(ctx.fit, ctx.data, ctx.keys["vpc"], model=post.model, num_replicates=ctx.num_replicates)
    return h.figure_img(result.plot(), alt="visual predictive check")


def _individual_fits(ctx: _Context) -> str:
    post = ctx._need_posterior("the individual fits")
    fn = ctx._diagnostic("plot_individual_fits")
    fig = fn(ctx.fit, post, ctx.data, ctx.keys["individual-fits"], ebe=ctx.ebe(), max_individuals=ctx.max_individuals)
    return h.figure_img(fig, alt="individual fits")


def _ebe(ctx: _Context) -> str:
    result = ctx.ebe()
    return h.figure_img(ctx._diagnostic("plot_ebe")(result), alt="EBE distributions") + h.table(result.table(), scroll=True)


def _comparison(ctx: _Context) -> str:
    if not ctx.fits:
        raise _Missing("no other fits given (pass fits={name: MAPResult}, or --compare DIR): nothing to compare.")
    from ..inference import compare

    return h.table(compare(dict(ctx.fits), ctx.data, ctx.keys["comparison"]), table_id="comparison-table")


_BUILDERS: dict[str, Callable[[_Context], str]] = {
    "parameters": _parameters, "objective": _objective, "surrogate": _surrogate, "mcmc": _mcmc, "gof": _gof, "vpc": _vpc,
    "individual-fits": _individual_fits, "ebe": _ebe, "comparison": _comparison,
}  # fmt: skip


def _build(section_id: str, ctx: _Context) -> str:
    try:
        return _BUILDERS[section_id](ctx)
    except _Missing as e:
        return h.note(str(e))
    except Exception as e:  # one section's failure must not lose the others: it is shown and warned
        warnings.warn(f"report section {section_id!r} failed ({type(e).__name__}: {e}); the report shows the error there.", ReportWarning, stacklevel=3)
        return h.note(f"This section failed: {type(e).__name__}: {e}", error=True)


# ---------------------------------------------------------------------------------- public
def report(
    fit,
    data,
    key,
    *,
    path: str | Path,
    posterior=None,
    idata=None,
    fits: Mapping | None = None,
    title: str | None = None,
    num_simulations: int = 500,
    num_replicates: int = 200,
    num_ebe_draws: int = 1000,
    max_individuals: int = 12,
) -> Path:
    """Write one self-contained HTML report of a population fit.

    Sections (each an `<h2>` with a stable `id`, see `SECTIONS`): `parameters`, `objective`,
    `surrogate`, `mcmc`, `gof`, `vpc`, `individual-fits`, `ebe`, `comparison`. A section whose
    input is missing (no `idata`, no `fits`, no estimator) says why; one that fails shows the
    error and issues a `ReportWarning`, and the others are
    still written. Figures are PNGs embedded as base64 `data:` URIs, so the file stands alone.

    **Arguments:**

    - `fit`: the [`MAPResult`][nlme_ppl.MAPResult] to report.
    - `data`: the [`Dataset`][nlme_ppl.Dataset] it was fitted to.
    - `key`: a JAX key; the simulations of the EBEs, residuals (NPDE), VPC and individual fits
      each get their own key split from it, so the same key gives the same report.
    - `path`: the HTML file to write (its folder is created).
    - `posterior`: the estimator that was fitted (default: `fit.posterior` where the fit has it).
    - `idata`: a NUTS DataTree ([`fit_nuts`][nlme_ppl.fit_nuts]) for the MCMC section.
    - `fits`: name -> `MAPResult` of population models fitted to the same data, for the
      comparison section.
    - `title`: the page title (default: names the model).
    - `num_simulations`, `num_replicates`, `num_ebe_draws`, `max_individuals`: the NPDE
      simulations, VPC replicates, EBE draws per individual and individuals plotted.

    **Returns:** the path written, as a `pathlib.Path`.
    """
    from .._validate import check_keys

    check_keys(key)
    posterior = getattr(fit, "posterior", None) if posterior is None else posterior
    ctx = _Context(fit, posterior, data, key, idata, fits, (num_simulations, num_replicates, num_ebe_draws, max_individuals))
    model = getattr(posterior, "model", None)
    title = title or f"Population fit: {getattr(model, 'name', 'model')}"
    meta = f"{len(fit.ids)} individuals, {len(fit.params)} population parameters; generated by nlme_ppl"
    sections = [(sid, name, _build(sid, ctx)) for sid, name in SECTIONS]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(h.page(title, meta, sections), encoding="utf-8")
    tmp.replace(path)
    return path


_SETTINGS = ("model", "estimator", "data", "covariance", "fixed", "fixed_treatment", "refine", "seed", "num_draws", "num_starts", "max_draws", "method")


def fit_from_dir(fit_dir: str | Path):
    """The fit `nlme-ppl fit --out DIR` made, redone from `DIR/fit.json`'s `settings` (model,
    estimator, data file, covariance, fixed parameters, refinement, seed, draws and starts: the
    same key gives the same fit).

    **Returns:** `(fit, posterior, data, key, settings)`: the [`MAPResult`][nlme_ppl.MAPResult],
    the estimator it used, the [`Dataset`][nlme_ppl.Dataset], the key and the settings dict.
    """
    fit_dir = Path(fit_dir)
    from .. import models, populations
    from ..estimators import load_posterior, pretrained
    from ..inference import fit_map
    from .nonmem import read_nonmem

    spec = fit_dir / "fit.json"
    if not spec.is_file():
        raise ValueError(f"{fit_dir} has no fit.json; give a folder written by `nlme-ppl fit --out DIR`.")
    settings = json.loads(spec.read_text()).get("settings")
    if settings is not None and settings.get("method") == "vae":
        raise ValueError(f"{fit_dir} is a fit by --method vae; the report, compare and covariates redo fits of the amortized "
                         "estimator (map or nuts) only. Its estimates, SEs and log-likelihood are in parameters.csv and fit.json.")
    missing = [k for k in _SETTINGS if settings is None or k not in settings]
    if missing:
        raise ValueError(f"{spec} lacks the settings {missing} that the report needs to redo the fit; rerun `nlme-ppl fit` "
                         "with this version of nlme_ppl.")  # fmt: skip
    est = settings["estimator"]
    post = load_posterior(est) if est else pretrained(settings["model"])  # a file rebuilds its model's training prior
    model = post.model if est else models.get(settings["model"])
    data = read_nonmem(settings["data"], occasion=settings.get("occasion"))
    population = populations.gaussian(model, covariance=settings["covariance"], fixed=tuple(settings["fixed"]),
                                      occasions=tuple(settings.get("iov", ())))
    key = jax.random.key(int(settings["seed"]))
    refine = "auto" if settings["refine"] is None else bool(settings["refine"])
    fit = fit_map(population, post, data, key, num_draws=settings["num_draws"], num_starts=settings["num_starts"], refine=refine,
                      fixed=settings["fixed_treatment"], max_draws=settings["max_draws"])  # fmt: skip
    return fit, post, data, key, settings


def report_from_dir(fit_dir: str | Path, *, path: str | Path, compare: Sequence[str | Path] = (), **options) -> Path:
    """The report of a fit written by `nlme-ppl fit --out DIR`.

    The fit is redone from `DIR/fit.json`'s `settings` (model, estimator, data file, population
    settings, seed: the same key gives the same fit), and `DIR/posterior.nc` is read for the MCMC
    section when present.

    **Arguments:**

    - `fit_dir`: the folder `nlme-ppl fit` wrote.
    - `path`: the HTML file to write.
    - `compare`: other such folders (fits to the same data), for the comparison section; each is
      named by its folder name.
    - `options`: passed to [`report`][nlme_ppl.io.report] (`title`, `num_simulations`, ...).

    **Returns:** the path written.
    """
    fit_dir = Path(fit_dir)
    occasion = json.loads((fit_dir / "fit.json").read_text()).get("settings", {}).get("occasion") if (fit_dir / "fit.json").is_file() else None
    if occasion:
        raise ValueError(f"{fit_dir} is a fit with occasions (--occasion {occasion}); the report does not take occasions yet. "
                         "Its estimates and SEs are in parameters.csv and fit.json.")
    fit, post, data, key, settings = fit_from_dir(fit_dir)
    idata = None
    if (fit_dir / "posterior.nc").is_file():
        import arviz as az

        idata = az.from_netcdf(fit_dir / "posterior.nc")
    fits = None
    if compare:
        fits = {fit_dir.name: fit} | {Path(d).name: fit_from_dir(d)[0] for d in compare}
    options.setdefault("title", f"Population fit: {settings['model']} ({settings['method']}, {fit_dir.name})")
    return report(fit, data, key, path=path, posterior=post, idata=idata, fits=fits, **options)
