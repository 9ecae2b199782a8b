"""Estimator files: one zip archive with `metadata.json` and `leaves.eqx`. Never pickle.

- `metadata.json`: format name and version, nlme_ppl version, model name and fingerprint,
  parameter names, training prior, the `TrainConfig` (to rebuild the network skeleton),
  the training history, and the SHA-256 of `leaves.eqx`.
- `leaves.eqx`: the network weights and standardisation, written by
  `equinox.tree_serialise_leaves` (NumPy `.npy` records of numeric arrays; loaded with
  pickling disabled).
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

    if not isinstance(post, AmortizedPosterior):
        raise TypeError(f"expected an AmortizedPosterior (from nlp.train); got {type(post).__name__}.")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot save to {str(path)!r}: directory {str(path.parent)!r} does not exist; create it first.")
    leaves = _leaves_bytes(post)
    model = post.model
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "nlme_ppl_version": __version__,
        "model": {
            "name": model.name,
            "fingerprint": model.fingerprint(),
            "param_names": list(model.param_names),
            "prior": model.prior_spec(),
        },
        "config": post.config.to_dict(),
        "architecture": {"num_params": model.num_params},
        "history": post.history.to_dict(),
        "leaves_sha256": hashlib.sha256(leaves).hexdigest(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(_META, json.dumps(meta, indent=2, sort_keys=True))
                zf.writestr(_LEAVES, leaves)
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
            if not {_META, _LEAVES} <= names:
                _refuse(path, f"{not_ours}; it holds {sorted(names)}, not {_META} and {_LEAVES}.")
            meta_bytes, leaves = zf.read(_META), zf.read(_LEAVES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as e:
        _refuse(path, f"the file is corrupt ({e}); save or download it again.")
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _refuse(path, f"its {_META} is not valid JSON ({e}); the file is corrupt.")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        _refuse(path, f"{not_ours}; its metadata names format {meta.get('format') if isinstance(meta, dict) else None!r}.")
    version = meta.get("format_version")
    if version not in _SUPPORTED_VERSIONS:
        _refuse(
            path,
            f"its format version {version!r} is not supported by this nlme_ppl (which reads versions "
            f"{list(_SUPPORTED_VERSIONS)}; the file was written by nlme_ppl {meta.get('nlme_ppl_version')!r}). "
            "Upgrade nlme_ppl or retrain the estimator.",
        )
    if hashlib.sha256(leaves).hexdigest() != meta.get("leaves_sha256"):
        _refuse(path, f"checksum mismatch: {_LEAVES} does not match the SHA-256 in {_META}; the file is corrupt.")
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

    **Returns:** an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior].

    Refused with a `ValueError` saying why: not an estimator file, corrupt or truncated,
    checksum mismatch, unsupported format version, or a model that does not match the one it
    was trained for (different fingerprint or parameter names).
    """
    from ..estimators._config import TrainConfig, TrainingHistory
    from ..estimators._posterior import AmortizedPosterior, build_networks
    from ..estimators._encoding import num_channels
    from ..estimators._summary import InputScaling
    from ..models import IndividualModel, get

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no estimator file at {str(path)!r}.")
    meta, leaves = _read_archive(path)
    try:
        name = meta["model"]["name"]
        config = TrainConfig.from_dict(meta["config"])
        num_params = int(meta["architecture"]["num_params"])
        history = TrainingHistory.from_dict(meta.get("history", {}))
    except (KeyError, TypeError, ValueError) as e:
        _refuse(path, f"its metadata is incomplete or invalid ({e}); the file is corrupt.")
    if model is None:
        try:
            model = get(name)
        except ValueError:
            _refuse(
                path,
                f"it was trained for model {name!r}, which is not a built-in model; pass the model: "
                "load_posterior(path, model=...).",
            )
    elif not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel; got {type(model).__name__}.")
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
