"""`nlme-ppl fit --occasion OCC --iov CL`: a NONMEM file with occasions, end to end from the CLI."""

import json

import pytest

import nlme_ppl as nlp
from nlme_ppl.cli import main
from tests.inference.test_occasions import pk_iov_study


@pytest.mark.heavy  # 162-492 s measured on a loaded machine: make test's 45-minute budget; the IOV engine is tested in tests/inference
def test_fit_with_occasions_from_the_command_line(tmp_path, capsys):
    n, k = 10, 2
    _, sim = pk_iov_study(n, k)
    frame = nlp.write_nonmem(sim, tmp_path / "study.csv")
    frame["OCC"] = frame["ID"].str.split("/").str[1].astype(int)
    frame["ID"] = frame["ID"].str.split("/").str[0].astype(int)
    frame["TIME"] = frame["TIME"] + 168.0 * (frame["OCC"] - 1)
    frame.to_csv(tmp_path / "study.csv", index=False)
    out = tmp_path / "fit"
    args = ["fit", "--model", "pk_oral_1cmt", "--data", str(tmp_path / "study.csv"), "--fixed", "sigma_add", "--no-refine"]
    assert main([*args, "--occasion", "OCC", "--iov", "CL", "--out", str(out)]) == 0
    result = json.loads((out / "fit.json").read_text())
    assert result["num_individuals"] == n and result["num_occasions"] == n * k
    params = result["population_parameters"]
    assert set(params) == {"mean[ka]", "mean[CL]", "mean[V]", "mean[sigma_add]", "sd[ka]", "sd[CL]", "sd[V]", "sd_occ[CL]"}
    # 10 individuals: only sanity (0 < sd_occ < 1 on the log scale, finite SE); recovery is tested in tests/inference
    assert 0 < params["sd_occ[CL]"] < 1 and result["standard_errors"]["sd_occ[CL]"] > 0
    assert result["settings"]["occasion"] == "OCC" and result["settings"]["iov"] == ["CL"]
    capsys.readouterr()
    assert main([*args, "--iov", "CL", "--out", str(tmp_path / "bad")]) == 2
    assert "--iov needs --occasion" in capsys.readouterr().err
    assert main(["report", "--fit", str(out), "--out", str(tmp_path / "r.html")]) == 2
    assert "the report does not take occasions yet" in capsys.readouterr().err
