"""`save_posterior` and `load_posterior`: an estimator of any backend to and from one file.

The file format (zip, metadata, checksum, version, atomic write) and the backend registry are
`nlme_ppl.io.serialization`. Here: the model's part of the metadata (name, fingerprint,
parameter names, training prior), which model a file is loaded for, and the check that it is
the one the estimator was trained for. The estimator gives the rest (`to_archive`), and its
backend's loader rebuilds it (`from_archive`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io.serialization import ArchiveError, get_backend, read_archive, refuse, write_archive
from ..models import IndividualModel, get, with_prior
from ..models._prior import prior_from_spec
from ._protocol import Posterior

__all__ = ["load_posterior", "save_posterior"]


def _model_metadata(model: IndividualModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "fingerprint": model.fingerprint(),
        "param_names": list(model.param_names),
        "prior": model.prior_spec(),
    }


def save_posterior(post: Posterior, path: str | Path) -> None:
    """Write `post` (an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior], an
    [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior], or any
    [`Posterior`][nlme_ppl.estimators.Posterior] of a registered backend) to `path`.

    The write is atomic: a temporary file in the same directory is renamed over `path`, so
    an interrupted save never leaves a half-written estimator. The conventional suffix is
    `.nlp`.

    **Arguments:**

    - `post`: the trained posterior.
    - `path`: the file to write (its directory must exist).
    """
    if not isinstance(post, Posterior):
        raise TypeError(f"expected an AmortizedPosterior or SbiPosterior (from nlp.train); got {type(post).__name__}.")
    meta, payload = post.to_archive()
    write_archive(path, backend=post.backend, metadata={**meta, "model": _model_metadata(post.model)}, payload=payload)


def load_posterior(path: str | Path, *, model: IndividualModel | None = None) -> Posterior:
    """Load an estimator written by [`save_posterior`][nlme_ppl.estimators.save_posterior].

    **Arguments:**

    - `path`: the `.nlp` file.
    - `model`: the [`IndividualModel`][nlme_ppl.IndividualModel] it was trained for.
      Default: the built-in model of the stored name (`nlp.models.get(name)`).

    **Returns:** an [`AmortizedPosterior`][nlme_ppl.AmortizedPosterior], or for a file of the
    sbi backend an [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior] (which needs the
    `[sbi]` extra): the backend's loader, found in the archive registry, rebuilds it.

    Refused with a `ValueError` saying why: not an estimator file, corrupt or truncated,
    checksum mismatch, unsupported format version, or a model that does not match the one it
    was trained for (different fingerprint or parameter names).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no estimator file at {str(path)!r}.")
    meta, payload = read_archive(path)
    try:
        stored = meta["model"]
        name, fingerprint, param_names = stored["name"], stored["fingerprint"], tuple(stored["param_names"])
    except (KeyError, TypeError) as e:
        refuse(path, f"its metadata is incomplete or invalid ({e}); the file is corrupt.")
    model = _model_for(path, name, model, stored.get("prior"), fingerprint)
    _check_model(path, model, name=name, fingerprint=fingerprint, param_names=param_names, stored_prior=stored.get("prior"))
    loader = get_backend(meta["backend"]).loader
    try:
        return loader(meta, payload, model)
    except ArchiveError as e:
        refuse(path, str(e))


def _model_for(path, name: str, model, stored_prior=None, fingerprint=None):
    """The model an estimator file is loaded for: `model`, or the built-in one of its stored name,
    with the training prior the file records where it differs from the default (`prior=`)."""
    if model is None:
        try:
            model = get(name)
        except ValueError:
            refuse(path, f"it was trained for model {name!r}, which is not a built-in model; pass the model: "
                         "load_posterior(path, model=...).")
        if fingerprint != model.fingerprint() and isinstance(stored_prior, dict) and stored_prior != model.prior_spec():
            try:
                model = with_prior(model, prior_from_spec(model, stored_prior))
            except ValueError as e:
                refuse(path, f"its training prior cannot be rebuilt for the built-in model {name!r} ({e}); pass the model: "
                             "load_posterior(path, model=...).")
        return model
    if not isinstance(model, IndividualModel):
        raise TypeError(f"`model` must be an IndividualModel; got {type(model).__name__}.")
    return model


def _check_model(path, model: IndividualModel, *, name: str, fingerprint: str, param_names: tuple[str, ...], stored_prior=None) -> None:
    trained_for = f"{name!r} (fingerprint {fingerprint}, parameters {param_names})"
    if param_names != tuple(model.param_names):
        refuse(
            path,
            f"it was trained for model {trained_for}, but the model given has parameters {model.param_names}. "
            "Load it with the matching model, or retrain for this one (nlp.train).",
        )
    if fingerprint != model.fingerprint():
        refuse(
            path,
            f"it was trained for model {trained_for}, but the model given ({model.name!r}) has fingerprint "
            f"{model.fingerprint()}: its prior, design or observed site differ"
            + _prior_difference(stored_prior, model)
            + ". Load it with the matching model (e.g. the same prior=, or no model: load_posterior(path) rebuilds "
            "a built-in model with the prior its file records), or retrain for this one (nlp.train).",
        )


def _prior_difference(stored_prior, model: IndividualModel) -> str:
    """`; its training prior differs: CL Normal(0, 1.5) in the file, Normal(1, 1) in the model` (or '')."""
    if not isinstance(stored_prior, dict):
        return ""
    own = model.prior_spec()
    show = lambda s: f"{s.get('dist')}({s.get('loc')}, {s.get('scale')})" if isinstance(s, dict) else repr(s)  # noqa: E731
    diff = [f"{n} {show(s)} in the file, {show(own.get(n))} in the model" for n, s in stored_prior.items() if own.get(n) != s]
    return f"; its training prior differs: {'; '.join(diff)}" if diff else ""
