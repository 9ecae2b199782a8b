"""train(designs=data) records its designs and prior, loads, and fit uses it; the design check
fires on data outside the training designs and not on the training data; prior= fingerprints."""

import dataclasses
import json
import warnings

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.designs import DesignWarning
from nlme_ppl.estimators import PRETRAINED_CONFIGS

from ._study import iv_study


def test_prior_changes_fingerprint_and_is_refused_with_reason(tmp_path):
    base = nlp.models.pk_iv_1cmt()
    changed = nlp.models.pk_iv_1cmt(prior={"CL": (0.0, 1.5)})
    assert base.fingerprint() == nlp.models.pk_iv_1cmt(prior=None).fingerprint() == nlp.models.get("pk_iv_1cmt").fingerprint()
    assert changed.fingerprint() != base.fingerprint()
    assert changed.prior_spec()["CL"] == {"dist": "Normal", "loc": 0.0, "scale": 1.5}
    with pytest.raises(ValueError, match=r"parameters are \['CL', 'V', 'sigma_add'\]"):
        nlp.models.pk_iv_1cmt(prior={"ka": (0.0, 1.0)})
    with pytest.raises(ValueError, match="SD positive"):
        nlp.models.pk_oral_1cmt(prior={"CL": (0.0, -1.0)})
    for ctor in (nlp.models.frohlich_detailed, nlp.models.frohlich_sde, nlp.models.sunitinib, nlp.models.pk_oral_2cmt, nlp.models.pk_iv_2cmt):
        m = ctor()
        name = m.param_names[0]
        assert ctor(prior={name: (0.5, 0.5)}).fingerprint() != m.fingerprint()
    assert nlp.pretrained("pk_oral_1cmt").model.fingerprint() == nlp.models.pk_oral_1cmt().fingerprint()
    with pytest.raises(ValueError):  # the shipped estimator, under another prior: refused with the reason
        nlp.load_posterior(_shipped("pk_oral_1cmt"), model=nlp.models.pk_oral_1cmt(prior={"CL": (0.0, 1.5)}))
    try:
        nlp.load_posterior(_shipped("pk_oral_1cmt"), model=nlp.models.pk_oral_1cmt(prior={"CL": (0.0, 1.5)}))
    except ValueError as e:
        assert "CL Normal(1.0, 1.0) in the file, Normal(0.0, 1.5) in the model" in str(e)


def _shipped(name):
    import importlib.resources

    return importlib.resources.files("nlme_ppl") / "pretrained" / f"{name}.nlp"


def test_train_on_data_designs_records_loads_and_fits(tmp_path):
    data = iv_study(path=tmp_path / "study.csv")
    model = nlp.models.pk_iv_1cmt(prior={"CL": (1.0, 1.5)})
    config = dataclasses.replace(PRETRAINED_CONFIGS["pk_iv_1cmt"][1], max_epochs=1)
    post = nlp.train(model, jax.random.key(0), designs=data, num_simulations=2000, config=config, progress=False)
    post.save(tmp_path / "est.nlp")
    loaded = nlp.load_posterior(tmp_path / "est.nlp")  # no model: rebuilt with the prior the file records
    assert loaded.model.fingerprint() == model.fingerprint()
    rec = json.loads(loaded.design_record)
    assert rec["kind"] == "like" and rec["num_individuals"] == 12 and rec["data_sha256"] == nlp.designs.data_hash(data)
    env = rec["envelope"]
    assert env["max_doses"] == 5 and env["routes"] == [[1, "bolus"]] and not env["steady_state"]
    pop = nlp.populations.gaussian(loaded.model, fixed=("sigma_add",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesignWarning)  # the training data lie inside
        warnings.simplefilter("ignore", nlp.diagnostics.SurrogateWarning)
        fit = nlp.fit_map(pop, loaded, data, jax.random.key(1), num_draws=20, num_starts=2, refine=False, diagnose=False, max_draws=20)
    assert "mean[CL]" in fit.params
    for other in (iv_study(doses=7), iv_study(rate=40.0), iv_study(follow=300.0)):
        with pytest.warns(DesignWarning, match="designs-from"):
            nlp.designs.check_designs(loaded, other)
    old = nlp.pretrained("pk_oral_1cmt")  # a file without a designs block still loads, with no record
    assert old.design_record == ""
