"""Estimator files: round trip, refusals with reasons, no pickle, atomic writes."""

import json
import pickle
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.io import load_posterior, pretrained, save_posterior
from tests.estimators._helpers import linear_model, some_data, untrained_posterior

ROOT_PRETRAINED = Path(nlp.__file__).parent / "pretrained"


@pytest.fixture(scope="module")
def post():
    return untrained_posterior()


@pytest.fixture
def saved(post, tmp_path):
    path = tmp_path / "est.nlp"
    post.save(path)
    return path


def _rewrite(src, dst, *, meta=None, leaves=None, drop=()):
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n not in drop}
    if meta is not None:
        members["metadata.json"] = json.dumps(meta(json.loads(members["metadata.json"]))).encode()
    if leaves is not None:
        members["leaves.eqx"] = leaves(members["leaves.eqx"])
    with zipfile.ZipFile(dst, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    return dst


def test_round_trip_gives_identical_draws(post, saved):
    loaded = load_posterior(saved, model=linear_model())
    data = some_data(5)
    key = jax.random.key(7)
    np.testing.assert_array_equal(loaded.sample(data, key, num_draws=9), post.sample(data, key, num_draws=9))
    draws = post.sample(data, key, num_draws=3)
    np.testing.assert_array_equal(loaded.log_prob(data, draws), post.log_prob(data, draws))
    assert loaded.config == post.config
    assert loaded.history.val_loss == post.history.val_loss and loaded.history.best_epoch == 1
    assert loaded.param_names == ("a", "b")


def test_metadata(saved):
    with zipfile.ZipFile(saved) as zf:
        assert sorted(zf.namelist()) == ["leaves.eqx", "metadata.json"]
        meta = json.loads(zf.read("metadata.json"))
    m = linear_model()
    assert meta["format"] == "nlme_ppl.AmortizedPosterior" and meta["format_version"] == 1
    assert meta["nlme_ppl_version"] == nlp.__version__
    assert meta["model"]["name"] == "linear_test"
    assert meta["model"]["fingerprint"] == m.fingerprint()
    assert meta["model"]["param_names"] == ["a", "b"]
    assert meta["model"]["prior"] == m.prior_spec()
    assert meta["config"]["summary"] == "deepset" and len(meta["leaves_sha256"]) == 64


def test_file_contains_no_pickle(saved, monkeypatch):
    with zipfile.ZipFile(saved) as zf:
        leaves = zf.read("leaves.eqx")
    # every record is a NumPy .npy array of a numeric dtype (object arrays would be pickled)
    records = leaves.split(b"\x93NUMPY")[1:]
    assert records
    for r in records:
        header = r[4 : 4 + int.from_bytes(r[2:4], "little")].decode("latin1")
        assert "'descr': '|O'" not in header and "'descr': 'O'" not in header
    assert b"\x80\x04\x95" not in leaves and b"\x80\x05\x95" not in leaves  # pickle protocol 4/5 frames

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    load_posterior(saved, model=linear_model())


def test_atomic_write_leaves_no_temporary_files(post, tmp_path):
    path = tmp_path / "est.nlp"
    post.save(path)
    save_posterior(post, path)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["est.nlp"]
    with pytest.raises(ValueError, match="does not exist"):
        post.save(tmp_path / "missing_dir" / "est.nlp")
    with pytest.raises(TypeError, match="AmortizedPosterior"):
        save_posterior("not a posterior", path)


def test_truncated_file_is_refused(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "truncated.nlp"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a zip archive, or it is truncated"):
        load_posterior(bad, model=linear_model())


def test_corrupt_bytes_are_refused(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("leaves.eqx")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 10, start + 40):
        data[i] ^= 0xFF
    bad = tmp_path / "corrupt.nlp"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_posterior(bad, model=linear_model())


def test_checksum_mismatch_is_refused(saved, tmp_path):
    def flip(b):
        b = bytearray(b)
        b[-5] ^= 0x01
        return bytes(b)

    bad = _rewrite(saved, tmp_path / "tampered.nlp", leaves=flip)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_posterior(bad, model=linear_model())


def test_wrong_model_is_refused(saved):
    with pytest.raises(ValueError, match=r"trained for model 'linear_test'.*parameters \('delta'"):
        load_posterior(saved, model=nlp.models.frohlich_simple())
    # same parameter names, another design: a different fingerprint
    other = nlp.models.IndividualModel(linear_model().fn, {"times": np.linspace(0, 2, 5)}, name="linear_test")
    with pytest.raises(ValueError, match=r"trained for model 'linear_test'.*fingerprint.*retrain"):
        load_posterior(saved, model=other)
    with pytest.raises(ValueError, match="not a built-in model; pass the model"):
        load_posterior(saved)


def test_unsupported_format_version_is_refused(saved, tmp_path):
    def bump(meta):
        return {**meta, "format_version": 99}

    bad = _rewrite(saved, tmp_path / "v99.nlp", meta=bump)
    with pytest.raises(ValueError, match="format version 99 is not supported"):
        load_posterior(bad, model=linear_model())


def test_other_format_is_refused(saved, tmp_path):
    bad = _rewrite(saved, tmp_path / "other.nlp", meta=lambda m: {**m, "format": "something.else"})
    with pytest.raises(ValueError, match="not a nlme_ppl estimator file"):
        load_posterior(bad, model=linear_model())
    bad = _rewrite(saved, tmp_path / "nometa.nlp", drop=("metadata.json",))
    with pytest.raises(ValueError, match="not a nlme_ppl estimator file"):
        load_posterior(bad, model=linear_model())


def test_non_zip_file_is_refused(tmp_path):
    bad = tmp_path / "notes.nlp"
    bad.write_text("hello, I am not an estimator\n")
    with pytest.raises(ValueError, match="not a nlme_ppl estimator file.*not a zip archive"):
        load_posterior(bad)
    pkl = tmp_path / "est.pkl"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a zip archive"):
        load_posterior(pkl)
    with pytest.raises(FileNotFoundError):
        load_posterior(tmp_path / "missing.nlp")


def test_weights_that_do_not_fit_are_refused(saved, tmp_path):
    def shrink(meta):
        meta["config"]["hidden_size"] = 17
        return meta

    bad = _rewrite(saved, tmp_path / "arch.nlp", meta=shrink)
    with pytest.raises(ValueError, match="do not fit the architecture"):
        load_posterior(bad, model=linear_model())


def test_pretrained_unknown_name():
    with pytest.raises(ValueError, match=r"no pretrained estimator named 'nope'; available: \["):
        pretrained("nope")


def test_pretrained_frohlich_simple_loads():
    post = pretrained("frohlich_simple")
    assert post.param_names == nlp.models.frohlich_simple().param_names
    assert pretrained("frohlich_simple") is post  # cached
    data = nlp.Dataset.from_arrays(np.arange(1, 181) / 6.0, np.zeros((2, 180)))
    draws = post.sample(data, jax.random.key(0), num_draws=10)
    assert draws.shape == (2, 10, 6) and np.isfinite(np.asarray(draws)).all()


def test_every_shipped_estimator_loads_for_its_model_and_has_a_recipe():
    from nlme_ppl.estimators import PRETRAINED_CONFIGS
    from nlme_ppl.estimators._pretrained import _available

    names = _available()
    assert {"frohlich_simple", "pk_oral_1cmt"} <= set(names)
    for name in names:
        post = pretrained(name)
        assert post.model.fingerprint() == nlp.models.get(name).fingerprint() and name in PRETRAINED_CONFIGS


#: Known SBC failures at seed 0, documented in docs/guide/estimators.md (sigma of
#: frohlich_simple leaves the band near its upper end); strict, so a fix shows up as a failure here.
_SBC_KNOWN_FAIL = {
    "frohlich_simple": "sigma leaves the 99% band near its upper end at seed 0; seed 1 passes 6/6 (docs/guide/estimators.md)",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.xfail(reason=_SBC_KNOWN_FAIL[n], strict=True), pytest.mark.heavy]) if n in _SBC_KNOWN_FAIL else n
     for n in sorted(p.stem for p in ROOT_PRETRAINED.glob("*.nlp"))],
)
def test_every_shipped_estimator_passes_sbc(name):
    """SBC on 500 held-out simulations (seed 0, 100 draws, 99 % simultaneous bands), as documented."""
    from nlme_ppl.diagnostics import sbc

    post = pretrained(name)
    result = sbc(post, post.model, jax.random.key(0), num_simulations=500, num_draws=100)
    assert all(result.passed.values()), result.table()


# ---------------------------------------------------------------- the archive and its backend registry
class _ToyPosterior:
    """A posterior of a backend registered by a test: the archive needs nothing of it but the protocol."""

    backend = "toy_test_backend"

    def __init__(self, model, weights: bytes, config=None):
        self.model, self.weights, self.config = model, weights, config or {"width": 3}

    param_names = property(lambda self: self.model.param_names)

    def sample(self, data, key, *, num_draws):
        return np.zeros((data.num_individuals, num_draws, self.model.num_params))

    def log_prob(self, data, params):
        return np.zeros(np.shape(params)[:2])

    def summaries(self, data):
        return None

    def save(self, path):
        save_posterior(self, path)

    def to_archive(self):
        return {"config": self.config}, self.weights

    @classmethod
    def from_archive(cls, metadata, payload, model):
        from nlme_ppl.io.serialization import ArchiveError

        if payload == b"bad":
            raise ArchiveError("its weights do not fit the architecture in its metadata (toy).")
        return cls(model, payload, metadata["config"])


def test_a_registered_backend_round_trips_through_the_archive(tmp_path):
    from nlme_ppl.io.serialization import backend_names, get_backend, register_backend

    register_backend("toy_test_backend", payload="toy.bin", loader=_ToyPosterior.from_archive)
    assert "toy_test_backend" in backend_names() and get_backend("toy_test_backend").payload == "toy.bin"
    post = _ToyPosterior(linear_model(), b"\x00\x01weights")
    assert isinstance(post, nlp.estimators.Posterior)
    post.save(tmp_path / "toy.nlp")
    with zipfile.ZipFile(tmp_path / "toy.nlp") as zf:
        assert sorted(zf.namelist()) == ["metadata.json", "toy.bin"]
        meta = json.loads(zf.read("metadata.json"))
    assert meta["backend"] == "toy_test_backend" and meta["model"]["name"] == "linear_test"
    back = load_posterior(tmp_path / "toy.nlp", model=linear_model())
    assert isinstance(back, _ToyPosterior) and back.weights == post.weights and back.config == {"width": 3}
    _ToyPosterior(linear_model(), b"bad").save(tmp_path / "bad.nlp")
    with pytest.raises(ValueError, match=r"cannot load estimator .*: its weights do not fit.*\(toy\)"):
        load_posterior(tmp_path / "bad.nlp", model=linear_model())


def test_unknown_backends_are_refused(saved, tmp_path):
    from nlme_ppl.io.serialization import get_backend

    bad = _rewrite(saved, tmp_path / "future.nlp", meta=lambda m: {**m, "backend": "quantum"})
    with pytest.raises(ValueError, match="backend 'quantum' is not one this nlme_ppl knows"):
        load_posterior(bad, model=linear_model())
    with pytest.raises(ValueError, match="unknown backend 'quantum'"):
        get_backend("quantum")
    with pytest.raises(ValueError, match=r"`backend` must be one of \[.*'flowjax'.*'sbi'"):
        nlp.train(linear_model(), jax.random.key(0), num_simulations=10, backend="quantum")


def test_the_archive_module_imports_no_estimator():
    import ast

    import nlme_ppl.io.serialization as ser

    nodes = list(ast.walk(ast.parse(Path(ser.__file__).read_text())))  # in functions too
    relative = {"." * n.level + (n.module or "") for n in nodes if isinstance(n, ast.ImportFrom) and n.level}
    absolute = {n.module for n in nodes if isinstance(n, ast.ImportFrom) and not n.level} | {
        a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    assert relative == {".._version"} and not any(m.startswith("nlme_ppl") for m in absolute)
