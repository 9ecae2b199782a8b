"""Estimator files: one zip archive with `metadata.json` and the weights. Never pickle.

- `metadata.json`: format name and version, nlme_ppl version, the backend, model name and
  fingerprint, parameter names, training prior, the configuration (to rebuild the network
  skeleton), the training history, and the SHA-256 of the weights.
- the weights: `leaves.eqx` for the flowjax backend, written by `equinox.tree_serialise_leaves`
  (NumPy `.npy` records of numeric arrays; loaded with pickling disabled); `weights.pt` for the
  sbi backend, `torch.save` of the state dict (tensors only; loaded with
  `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_posterior", "pretrained", "save_posterior"]

FORMAT_NAME = "nlme_ppl.AmortizedPosterior"
FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = (1,)
_META, _LEAVES = "metadata.json", "leaves.eqx"
_PAYLOAD = {"flowjax": _LEAVES, "sbi": "weights.pt"}  # the weights file of each backend


def _payload(post):
    """The part of a posterior stored in `leaves.eqx` (arrays only; the model is not stored)."""
    return (post.summary, post.flow, post.param_loc, post.param_scale)


def _leaves_bytes(post) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, _payload(post))
    return buf.getvalue()


def save_posterior(post, path: str | Path) -> None:
    """Write `post` (an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior]) to `path`.

    The write is atomic: a temporary file in the same directory is renamed over `path`, so
    an interrupted save never leaves a half-written estimator. The conventional suffix is
    `.nlp`.

    **Arguments:**

    - `post`: the trained posterior.
    - `path`: the file to write (its directory must exist).
    """
    from .._version import __version__
    from ..estimators._posterior import AmortizedPosterior

    backend = getattr(post, "backend", None) if not isinstance(post, AmortizedPosterior) else "flowjax"
    if backend not in _PAYLOAD:
        raise TypeError(f"expected an AmortizedPosterior or SbiPosterior (from nlp.train); got {type(post).__name__}.")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot save to {str(path)!r}: directory {str(path.parent)!r} does not exist; create it first.")
    leaves = _leaves_bytes(post) if backend == "flowjax" else post._weights()
    model = post.model
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "nlme_ppl_version": __version__,
        "backend": backend,
        "model": {
            "name": model.name,
            "fingerprint": model.fingerprint(),
            "param_names": list(model.param_names),
            "prior": model.prior_spec(),
        },
        "config": post.config.to_dict(),
        "architecture": {"num_params": model.num_params} if backend == "flowjax" else post._architecture(),
        "history": post.history.to_dict() if backend == "flowjax" else post.history,
        "leaves_sha256": hashlib.sha256(leaves).hexdigest(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(_META, json.dumps(meta, indent=2, sort_keys=True))
                zf.writestr(_PAYLOAD[backend], leaves)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _refuse(path, reason: str):
    raise ValueError(f"cannot load estimator {str(path)!r}: {reason}")


def _read_archive(path: Path) -> tuple[dict[str, Any], bytes]:
    not_ours = "it is not a nlme_ppl estimator file (expected a .nlp zip archive written by post.save)"
    if not zipfile.is_zipfile(path):
        _refuse(path, f"{not_ours}; it is not a zip archive, or it is truncated.")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if _META not in names:
                _refuse(path, f"{not_ours}; it holds {sorted(names)}, not {_META}.")
            meta_bytes = zf.read(_META)
            try:
                meta = json.loads(meta_bytes.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                _refuse(path, f"its {_META} is not valid JSON ({e}); the file is corrupt.")
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                _refuse(path, f"{not_ours}; its metadata names format {meta.get('format') if isinstance(meta, dict) else None!r}.")
            backend = meta.get("backend", "flowjax")
            if backend not in _PAYLOAD:
                _refuse(path, f"its backend {backend!r} is not one this nlme_ppl knows ({sorted(_PAYLOAD)}); upgrade nlme_ppl.")
            if _PAYLOAD[backend] not in names:
                _refuse(path, f"{not_ours}; it holds {sorted(names)}, not {_META} and {_PAYLOAD[backend]}.")
            leaves = zf.read(_PAYLOAD[backend])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as e:
        _refuse(path, f"the file is corrupt ({e}); save or download it again.")
    version = meta.get("format_version")
    if version not in _SUPPORTED_VERSIONS:
        _refuse(
            path,
            f"its format version {version!r} is not supported by this nlme_ppl (which reads versions "
            f"{list(_SUPPORTED_VERSIONS)}; the file was written by nlme_ppl {meta.get('nlme_ppl_version')!r}). "
            "Upgrade nlme_ppl or retrain the estimator.",
        )
    if hashlib.sha256(leaves).hexdigest() != meta.get("leaves_sha256"):
        _refuse(path, f"checksum mismatch: {_PAYLOAD[backend]} does not match the SHA-256 in {_META}; the file is corrupt.")
    return meta, leaves


def _check_model(path, meta: dict, model) -> None:
    stored = meta["model"]
    trained_for = f"{stored['name']!r} (fingerprint {stored['fingerprint']}, parameters {tuple(stored['param_names'])})"
    if tuple(stored["param_names"]) != tuple(model.param_names):
        _refuse(
            path,
            f"it was trained for model {trained_for}, but the model given has parameters {model.param_names}. "
            "Load it with the matching model, or retrain for this one (nlp.train).",
        )
    if stored["fingerprint"] != model.fingerprint():
        _refuse(
            path,
            f"it was trained for model {trained_for}, but the model given ({model.name!r}) has fingerprint "
            f"{model.fingerprint()}: its prior, design or observed site differ. Load it with the matching "
            "model, or retrain for this one (nlp.train).",
        )


def load_posterior(path: str | Path, *, model=None):
    """Load an estimator written by [`save_posterior`][nlme_ppl.estimators.save_posterior].

    **Arguments:**

    - `path`: the `.nlp` file.
    - `model`: the [`IndividualModel`][nlme_ppl.models.IndividualModel] it was trained for.
      Default: the built-in model of the stored name (`nlp.models.get(name)`).

    **Returns:** an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior], or for a file of the
    sbi backend an [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior] (which needs the
    `[sbi]` extra).

    Refused with a `ValueError` saying why: not an estimator file, corrupt or truncated,
    checksum mismatch, unsupported format version, or a model that does not match the one it
    was trained for (different fingerprint or parameter names).
    """
    from ..estimators._config import TrainConfig, TrainingHistory
    from ..estimators._posterior import AmortizedPosterior, build_networks
    from ..estimators._encoding import num_channels
    from ..estimators._summary import InputScaling

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no estimator file at {str(path)!r}.")
    meta, leaves = _read_archive(path)
    if meta.get("backend", "flowjax") == "sbi":
        return _load_sbi(path, meta, leaves, model)
    try:
        _ = meta["model"]["name"]  # required
        config = TrainConfig.from_dict(meta["config"])
        num_params = int(meta["architecture"]["num_params"])
        history = TrainingHistory.from_dict(meta.get("history", {}))
    except (KeyError, TypeError, ValueError) as e:
        _refuse(path, f"its metadata is incomplete or invalid ({e}); the file is corrupt.")
    model = _model_for(path, meta, model)
    _check_model(path, meta, model)
    if num_params != model.num_params:
        _refuse(path, f"it stores {num_params} parameters but the model has {model.num_params}.")
    with jax.enable_x64(False):
        summary, flow = build_networks(
            config, num_params=num_params, scaling=InputScaling(), key=jax.random.key(0), num_channels=num_channels(model)
        )
    like = (summary, flow, jnp.zeros(num_params, jnp.float64), jnp.zeros(num_params, jnp.float64))
    try:
        summary, flow, loc, scale = eqx.tree_deserialise_leaves(io.BytesIO(leaves), like)
    except Exception as e:  # noqa: BLE001 - any failure here means the leaves do not fit the skeleton
        _refuse(path, f"its weights do not fit the architecture in its metadata ({type(e).__name__}: {e}).")
    return AmortizedPosterior(
        model=model, summary=summary, flow=flow, param_loc=loc, param_scale=scale, config=config, history=history
    )


def _model_for(path, meta: dict, model):
    """The model an estimator file is loaded for: `model`, or the built-in one of its stored name."""
    from ..models import IndividualModel, get

    name = meta["model"]["name"]
    if model is None:
        try:
            return get(name)
        except ValueError:
            _refuse(path, f"it was trained for model {name!r}, which is not a built-in model; pass the model: "
                          "load_posterior(path, model=...).")
    if not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel; got {type(model).__name__}.")
    return model


def _load_sbi(path, meta: dict, weights: bytes, model):
    from ..backends.sbi._posterior import load_weights  # imports torch: only for sbi files

    try:
        model = _model_for(path, meta, model)
    except KeyError as e:
        _refuse(path, f"its metadata is incomplete or invalid ({e}); the file is corrupt.")
    _check_model(path, meta, model)
    try:
        return load_weights(meta, weights, model)
    except Exception as e:  # noqa: BLE001 - any failure here means the weights do not fit the architecture
        _refuse(path, f"its weights do not fit the architecture in its metadata ({type(e).__name__}: {e}).")


def _available() -> list[str]:
    root = importlib.resources.files("nlme_ppl") / "pretrained"
    return sorted(p.name[: -len(".nlp")] for p in root.iterdir() if p.name.endswith(".nlp"))


@functools.lru_cache(maxsize=8)
def _load_pretrained(name: str):
    res = importlib.resources.files("nlme_ppl") / "pretrained" / f"{name}.nlp"
    with importlib.resources.as_file(res) as p:
        return load_posterior(p)


def pretrained(name: str):
    """The pretrained estimator shipped with nlme_ppl for the built-in model `name`.

    **Arguments:**

    - `name`: a built-in model name, e.g. `"frohlich_simple"`.

    **Returns:** an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior] (loaded once, then cached).
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string; got {type(name).__name__}.")
    available = _available()
    if name not in available:
        raise ValueError(
            f"no pretrained estimator named {name!r}; available: {available}. Train one with "
            f"nlp.train(model, key, num_simulations=...)."
        )
    return _load_pretrained(name)
