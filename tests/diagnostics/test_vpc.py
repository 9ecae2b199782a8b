"""VPC: observed percentiles against numpy, simulated intervals against the closed form of the
linear-Gaussian model, the fraction below the LLOQ, prediction correction, and the plot."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

import nlme_ppl as nlp
from nlme_ppl.diagnostics import vpc
from tests import linear_gaussian as lg
from tests.diagnostics.test_residuals import censored_program

MEAN, SD = np.array([1.0, -0.5]), np.array([0.8, 0.3])


def _fit(model, data, mean=MEAN, sd=SD):
    pop = nlp.populations.gaussian(model)
    return SimpleNamespace(population=pop, site_values={"mean": jnp.array(mean), "sd": jnp.array(sd)}, refined=None, ids=data.ids)


def test_vpc_percentiles_and_intervals():
    """Observed percentiles equal numpy's per bin; each simulated median percentile is within
    0.15 of the closed-form quantile of y_t ~ N(a + b t, σ² + ω_a² + t² ω_b²) pooled over the bin
    (measured max 0.06), and the 95% intervals cover the observed ones under the true population."""
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(0), 200, MEAN, SD)
    edges = np.array([-1.01, -0.5, 0.0, 0.5, 1.01])
    r = vpc(_fit(model, data), data, jax.random.key(1), model=model, num_replicates=100, bins=edges)
    t, y = np.asarray(data.times).ravel(), np.asarray(data.values).ravel()
    table = r.table()
    assert list(table.index) == [0, 1, 2, 3] and table["n"].sum() == y.size
    for i in range(4):
        sel = (t >= edges[i]) & (t < edges[i + 1])
        np.testing.assert_allclose(r.observed[i], np.percentile(y[sel], [5, 50, 95]), rtol=1e-12)
        ts = np.unique(t[sel])
        sd = np.sqrt(lg.SIGMA**2 + SD[0] ** 2 + ts**2 * SD[1] ** 2)
        mix = lambda q: np.mean(stats.norm.cdf(q, MEAN[0] + MEAN[1] * ts, sd))  # noqa: E731
        from scipy.optimize import brentq

        truth = [brentq(lambda q: mix(q) - p, -20, 20) for p in (0.05, 0.5, 0.95)]
        np.testing.assert_allclose(r.simulated[i, :, 1], truth, atol=0.15)
    assert np.all((r.simulated[..., 0] <= r.observed) & (r.observed <= r.simulated[..., 2]))
    assert r.blq_observed is None and "blq_obs" not in table


def test_vpc_censored_fraction_and_plot(tmp_path):
    """A third of the data below the limit 0.5: the observed BLQ fraction per bin equals the
    flags' mean, the simulated interval covers it under the population of the 120 simulated
    individuals (their mean and SD: the key's draw of mean[a] is 2.3 SE low, which the true
    population's interval rightly misses in 2 of 4 bins), percentiles are computed with BLQ
    values at the limit, and the two-panel PNG decodes."""
    model = nlp.models.IndividualModel(censored_program, {"times": lg.TIMES, "lloq": np.full(8, -np.inf)}, name="lin_cens")
    pop = nlp.populations.gaussian(model)
    phi = nlp.simulate_population(pop, {"mean": MEAN, "sd": SD}, jax.random.key(3), num_individuals=120)
    designs = {"times": np.tile(lg.TIMES, (120, 1)), "mask": np.ones((120, 8), bool), "lloq": np.full((120, 8), 0.5)}
    data = nlp.simulate_data(model, phi, jax.random.key(4), designs=designs)
    fitted = _fit(model, data, np.mean(phi, 0), np.std(phi, 0))
    r = vpc(fitted, data, jax.random.key(5), model=model, num_replicates=100, bins=4)
    t, cens = np.asarray(data.times).ravel(), np.asarray(data.censored).ravel()
    b = np.clip(np.searchsorted(r.edges, t, side="right") - 1, 0, 3)
    np.testing.assert_allclose(r.blq_observed, [cens[b == i].mean() for i in range(4)], rtol=1e-12)
    assert np.all((r.blq_simulated[:, 0] <= r.blq_observed) & (r.blq_observed <= r.blq_simulated[:, 2]))
    assert r.lloq == pytest.approx(0.5) and np.all(r.simulated >= 0.5 - 1e-12)  # nothing below the limit
    fig = r.plot(tmp_path / "vpc.png")
    assert len(fig.axes) == 2
    with Image.open(tmp_path / "vpc.png") as im:
        im.load()
        assert im.size[0] > 500


def test_pcvpc_corrects_by_the_bin_median_of_pred():
    """pcDV = DV · median(PRED in bin) / PRED, with PRED = a + b t at the population mean."""
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(0), 30, MEAN, SD)
    r = vpc(_fit(model, data), data, jax.random.key(1), model=model, num_replicates=20, bins=2, pred_corr=True)
    t, y = np.asarray(data.times).ravel(), np.asarray(data.values).ravel()
    pred = MEAN[0] + MEAN[1] * t
    b = np.clip(np.searchsorted(r.edges, t, side="right") - 1, 0, 1)
    med = np.array([np.median(pred[b == i]) for i in range(2)])
    np.testing.assert_allclose(r.values, y * med[b] / pred, rtol=1e-10)
    with pytest.raises(ValueError, match="`ci` must be in"):
        vpc(_fit(model, data), data, jax.random.key(1), model=model, ci=95)
