"""`nlme-ppl train --designs-from ... --prior ...` then `nlme-ppl fit --estimator ...`, end to end."""

import json

import pytest

from nlme_ppl.cli import main

from .designs._study import iv_study


@pytest.mark.heavy
def test_train_designs_from_and_prior_then_fit(tmp_path):
    iv_study(path=tmp_path / "study.csv")
    est = tmp_path / "est.nlp"
    rc = main(["train", "--model", "pk_iv_1cmt", "--designs-from", str(tmp_path / "study.csv"), "--prior", "CL=0,1.5",
               "--prior", "V=3.5,1", "--num-simulations", "2000", "--max-epochs", "1", "--out", str(est)])
    assert rc == 0 and est.is_file()
    import nlme_ppl as nlp

    post = nlp.load_posterior(est)
    rec = json.loads(post.design_record)
    assert rec["kind"] == "like" and rec["source"]["file"] == "study.csv"
    assert post.model.prior_spec()["CL"]["scale"] == 1.5
    out = tmp_path / "fit"
    rc = main(["fit", "--model", "pk_iv_1cmt", "--estimator", str(est), "--data", str(tmp_path / "study.csv"), "--fixed", "sigma_add",
               "--method", "map", "--no-refine", "--num-starts", "2", "--num-draws", "30", "--max-draws", "30", "--out", str(out)])
    assert rc == 0
    fit = json.loads((out / "fit.json").read_text())
    assert "mean[CL]" in fit["population_parameters"] and "sd[V]" in fit["population_parameters"]


def test_prior_option_errors(capsys):
    assert main(["train", "--model", "pk_iv_1cmt", "--prior", "CL=0", "--out", "x.nlp"]) == 2
    assert "two numbers" in capsys.readouterr().err
    assert main(["train", "--model", "pk_iv_1cmt", "--prior", "ka=0,1", "--out", "x.nlp"]) == 2
    assert "parameters are" in capsys.readouterr().err
