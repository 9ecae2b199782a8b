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


def _public_callables():
    import inspect

    seen = {}
    for mod in (nlp, nlp.models, nlp.estimators, nlp.populations, nlp.diagnostics, nlp.inference):
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if inspect.isclass(obj) and issubclass(obj, dist.Distribution):
                continue  # NumPyro's own Distribution.sample(key, sample_shape) form
            if inspect.isclass(obj):
                for meth_name, meth in inspect.getmembers(obj, inspect.isfunction):
                    if not meth_name.startswith("_"):
                        seen[f"{mod.__name__}.{name}.{meth_name}"] = meth
            elif callable(obj):
                seen[f"{mod.__name__}.{name}"] = obj
    return seen


# samplers in NumPyro's Distribution.sample(key, shape) form (docs/guide/models.md, "The key convention")
KEY_FIRST = {"prior_sample", "sample_designs", "simulate_one", "symmetrize", "frohlich_sde_path"}


def test_the_key_is_the_last_positional_argument():
    import inspect

    checked, bad = 0, []
    for path, fn in _public_callables().items():
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            continue
        names = [p.name for p in params]
        if "key" not in names or path.rsplit(".", 1)[-1] in KEY_FIRST:
            continue
        checked += 1
        after = params[names.index("key") + 1 :]
        if any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in after):
            bad.append(path)
    assert checked >= 15  # the fits, simulations, training and diagnostics are all seen
    assert bad == [], f"public functions with positional arguments after `key`: {bad}"
