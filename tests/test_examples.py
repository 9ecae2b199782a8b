"""Every script in examples/ runs with tiny settings, so examples never rot."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"
TINY = {
    "frohlich_population.py": ["--num-individuals", "40", "--num-warmup", "30", "--num-samples", "30"],
    "exact_check.py": ["--num-individuals", "20", "--num-proposals", "500"],
    "custom_model.py": ["--num-simulations", "2000", "--max-epochs", "2", "--num-individuals", "20"],
    "bimodal_cell.py": ["--num-draws", "200"],
    "indometh.py": ["--num-simulations", "2000", "--max-epochs", "2"],
    "multi_experiment.py": ["--num-individuals", "60"],
    "theophylline.py": ["--num-warmup", "30", "--num-samples", "30"],
    "pk_censored.py": ["--num-individuals", "30"],
    "occasions.py": ["--num-individuals", "12"],
    "phenobarb.py": ["--num-simulations", "2000", "--max-epochs", "2"],
    "sunitinib.py": ["--num-individuals", "20", "--num-draws", "200"],
    "sbi_sde.py": ["--num-simulations", "2000", "--max-epochs", "2", "--num-individuals", "20", "--num-warmup", "20", "--num-samples", "20"],
}


def test_every_example_has_tiny_settings():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TINY)


#: Examples whose tiny run still takes minutes: run by make test-all, not by make test (measured
#: in one suite run on 2 cores: sunitinib 394 s, pk_censored 164 s, multi_experiment 119 s; their
#: models are tested in tests/models, censoring in tests/models/test_censoring.py, covariate
#: effects in tests/test_populations.py). Also, to keep `make test` under 45 minutes (stop 30's
#: run: theophylline 78 s, exact_check 73 s, custom_model 57 s, frohlich_population 33-118 s): the
#: demo population's NUTS fits and LOO comparison are tested in tests/inference; the Theophylline fit by
#: tests/test_cli.py and tests/models/test_pk.py, the exact baseline by tests/diagnostics/test_exact.py,
#: training a user's model by tests/estimators/test_train.py. Stop 31: occasions (60-110 s; the
#: IOV fit is tested in tests/inference/test_occasions.py, its reader in tests/io/test_nonmem.py).
#: Stop 33 (its suite run: phenobarb 77 s, indometh 64 s): training on a data set's designs and
#: fitting with that estimator are tested in tests/designs/test_train_designs.py, training a
#: user's model in tests/estimators/test_train.py, the NONMEM reader in tests/io/test_nonmem.py.
HEAVY = {"sbi_sde.py", "sunitinib.py", "pk_censored.py", "multi_experiment.py", "theophylline.py", "exact_check.py", "custom_model.py",
         "frohlich_population.py", "occasions.py", "phenobarb.py", "indometh.py"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.heavy) if n in HEAVY else n for n in sorted(TINY)])
def test_example_runs(name, tmp_path):
    cmd = [sys.executable, str(EXAMPLES / name), *TINY[name], "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert any(tmp_path.iterdir())


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "mean[delta]" in res.stdout and "elpd" in res.stdout.lower()
