"""The top-level API: what a user reaches for first is at `nlp.<name>`."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import nlme_ppl as nlp


def test_individual_model_is_exported_at_the_top_level():
    assert nlp.IndividualModel is nlp.models.IndividualModel
    assert "IndividualModel" in nlp.__all__


def test_a_user_program_through_the_top_level_name():
    def program(design, obs=None):
        log_k = numpyro.sample("log_k", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(-jnp.exp(log_k) * design["times"], 0.1), obs=obs)

    model = nlp.IndividualModel(program, {"times": np.linspace(0.5, 4.0, 8)}, name="mine")
    assert model.param_names == ("log_k",)
    sims = nlp.simulate(model, jax.random.key(0), num_simulations=16, progress=False)
    assert sims.params.shape == (16, 1) and sims.data.values.shape == (16, 8)
    # the data follow the program: y = -exp(log_k) t + noise, so y / t recovers -exp(log_k) to the noise
    slope = np.asarray(sims.data.values / sims.data.times).mean(1)
    np.testing.assert_allclose(slope, -np.exp(np.asarray(sims.params[:, 0])), atol=0.25)
