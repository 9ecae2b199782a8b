"""GOF plots: each writes a PNG that decodes, with the panels it promises."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import nlme_ppl as nlp
from nlme_ppl.diagnostics import ebe, plot_ebe, plot_gof, plot_individual_fits, residuals
from tests import linear_gaussian as lg

MEAN, SD = np.array([1.0, -0.5]), np.array([0.8, 0.3])


@pytest.fixture(scope="module")
def setup():
    model = lg.model()
    data, _ = lg.simulate_population(jax.random.key(0), 30, MEAN, SD)
    fit = SimpleNamespace(population=nlp.populations.gaussian(model), site_values={"mean": jnp.array(MEAN), "sd": jnp.array(SD)},
                          refined=None, ids=data.ids)  # fmt: skip
    post = lg.ExactPosterior(model)
    eb = ebe(fit, post, data, jax.random.key(1), num_draws=200)
    return model, data, fit, post, eb


def _decodes(path):
    with Image.open(path) as im:
        im.load()
        return im.size


def test_plot_gof(setup, tmp_path):
    model, data, fit, post, eb = setup
    df = residuals(fit, post, data, jax.random.key(2), num_simulations=100, ebe=eb)
    fig = plot_gof(df, path=tmp_path / "gof.png")
    assert [ax.get_title() for ax in fig.axes] == [
        "DV vs PRED", "NPDE vs TIME", "IWRES vs TIME", "DV vs IPRED", "NPDE vs PRED", "IWRES vs PRED"
    ]  # fmt: skip
    assert _decodes(tmp_path / "gof.png")[0] > 1000
    with pytest.raises(ValueError, match="needs the columns"):
        plot_gof(df.drop(columns="NPDE"))


def test_plot_individual_fits_band_contains_ipred(setup, tmp_path):
    """The IPRED curve lies inside the 90% band of each individual's conditional predictions."""
    model, data, fit, post, eb = setup
    fig = plot_individual_fits(fit, post, data, jax.random.key(3), ebe=eb, max_individuals=6, path=tmp_path / "ind.png")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [f"ID {i}" for i in data.ids[:6]]
    line = axes[0].lines[0].get_ydata()
    band = axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() <= line.min() and line.max() <= band.max()
    assert _decodes(tmp_path / "ind.png")[0] > 800


def test_plot_ebe(setup, tmp_path):
    model, data, fit, post, eb = setup
    fig = plot_ebe(eb, path=tmp_path / "ebe.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"eta[a]  shrinkage {eb.eta_shrinkage['a']:.0f}%", f"eta[b]  shrinkage {eb.eta_shrinkage['b']:.0f}%"]
    # the drawn density is N(0, omega) with the fitted omega
    x, y = fig.axes[0].lines[0].get_data()
    assert y.max() == pytest.approx(1 / (SD[0] * np.sqrt(2 * np.pi)), rel=1e-3)
    assert _decodes(tmp_path / "ebe.png")[0] > 400
