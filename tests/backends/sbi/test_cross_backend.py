"""The cross-backend check: flowjax- and sbi-trained estimators of pk_oral_1cmt, trained on the
same 100,000 torch simulations for 45 epochs (`python benchmarks/sbi_backend.py
--num-simulations 100000 --max-epochs 45 --save-dir DIR`, files copied to tests/backends/sbi/data),
fit the same synthetic population to within the tolerance docs/guide/sbi.md states, and both
recover the truth."""

from pathlib import Path

import jax
import numpy as np
import pytest

import nlme_ppl as nlp

pytest.importorskip("torch")

DATA = Path(__file__).parent / "data"
#: The stated tolerances (docs/guide/sbi.md): between the backends, and of each against the truth.
BETWEEN_MEANS, BETWEEN_SDS = 0.05, 0.03  # log-scale means (the residual error's too); SDs, absolute
TRUTH_MEANS, TRUTH_SDS = 0.06, 0.10  # log-scale means; SDs, relative


def population(model, n: int = 1000):
    """The benchmark's population (training-prior means, SD 0.3 on ka, CL and V, the noise fixed),
    with 1,000 individuals rather than the benchmark's 200. At 200 the estimate of sd[ka] has a
    standard error of 7-8% of its value (measured over 4 populations: errors -5% to +12%), so a
    10% tolerance was a test of the seed; at 1,000 the SE is 3.5% and the errors were -1% to +5%
    (flowjax estimator, 4 populations, simulation keys of issue 14)."""
    truth = {"mean": {p: float(model.prior[p].loc) for p in model.param_names}, "sd": {p: 0.3 for p in ("ka", "CL", "V")}}
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
    phi = np.asarray(nlp.simulate_population(pop, truth, k1, num_individuals=n))
    return nlp.simulate_data(model, phi, k2, designs=model.sample_designs(k3, n)), phi


@pytest.fixture(scope="module")
def fits():
    model = nlp.models.pk_oral_1cmt()
    data, phi = population(model)
    pop = nlp.populations.gaussian(model, fixed=("sigma_add",))
    out = {}
    for backend in ("flowjax", "sbi"):
        post = nlp.load_posterior(DATA / f"pk_oral_1cmt_{backend}_100k.nlp")
        assert type(post).__name__ == {"flowjax": "AmortizedPosterior", "sbi": "SbiPosterior"}[backend]
        out[backend] = nlp.fit_map(pop, post, data, jax.random.key(2), num_draws=300, num_starts=4, diagnose=False).params
    return model, phi, out


def test_backends_agree(fits):
    model, _, out = fits
    for label, v in out["flowjax"].items():
        tol = BETWEEN_MEANS if label.startswith("mean") else BETWEEN_SDS
        assert abs(out["sbi"][label] - v) <= tol, (label, out["sbi"][label], v)


def test_both_recover_the_truth(fits):
    model, phi, out = fits
    for backend, params in out.items():
        for i, name in enumerate(model.param_names):
            assert abs(params[f"mean[{name}]"] - phi[:, i].mean()) <= TRUTH_MEANS, (backend, name)
            if name != "sigma_add":
                assert abs(params[f"sd[{name}]"] / phi[:, i].std() - 1) <= TRUTH_SDS, (backend, name)
