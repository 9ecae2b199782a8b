"""The estimator archive: one zip file with `metadata.json` and the weights. Never pickle.

This module knows the file format only, not the estimators: the zip layout, the format name
and version, the SHA-256 of the weights, the atomic write, and a registry from a backend's name
to the code that rebuilds its estimators. It imports nothing of nlme_ppl above `_version`.

- `metadata.json`: format name and version, nlme_ppl version, the backend, and what the
  estimator gives (`to_archive`): the model's name and fingerprint, parameter names, training
  prior, the configuration, the architecture, the training history. Plus the SHA-256 of the
  weights.
- the weights, one member named by the backend: `leaves.eqx` for the flowjax backend
  (`equinox.tree_serialise_leaves`, NumPy `.npy` records of numeric arrays), `weights.pt` for
  the sbi backend (`torch.save` of the state dict, read with `torch.load(weights_only=True)`).

**The backend registry.** A backend registers a loader `(metadata, payload, model) -> posterior`
and a trainer `(model, key, **options) -> posterior` under its name with
`register_backend`. The backends nlme_ppl ships
are known here by module path only (`BUILTIN_BACKENDS`): the module is imported the first time
its backend is asked for, and registers itself then. That is how loading an sbi file, or
`nlp.train(..., backend="sbi")`, reaches `nlme_ppl.backends.sbi` (and torch) without any other
module importing it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from .._version import __version__

__all__ = [
    "BUILTIN_BACKENDS", "FORMAT_NAME", "FORMAT_VERSION", "ArchiveError", "Backend", "backend_names", "get_backend",
    "read_archive", "refuse", "register_backend", "write_archive",
]

FORMAT_NAME = "nlme_ppl.AmortizedPosterior"
FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = (1,)
_META = "metadata.json"

#: The backends shipped with nlme_ppl: name -> (the archive member of the weights, the module that
#: registers the backend when imported).
BUILTIN_BACKENDS: dict[str, tuple[str, str]] = {
    "flowjax": ("leaves.eqx", "nlme_ppl.estimators"),
    "sbi": ("weights.pt", "nlme_ppl.backends.sbi"),
}


class ArchiveError(ValueError):
    """An estimator file that cannot be loaded; the message says why."""


class Backend(NamedTuple):
    """A registered backend: its name, the archive member of its weights, its loader
    `(metadata, payload, model) -> posterior` and its trainer `(model, key, **options) -> posterior`."""

    name: str
    payload: str
    loader: Callable[[dict[str, Any], bytes, Any], Any]
    trainer: Callable[..., Any] | None = None


_REGISTRY: dict[str, Backend] = {}


def register_backend(name: str, *, loader: Callable, trainer: Callable | None = None, payload: str | None = None) -> None:
    """Register (or replace) backend `name`: its estimators are rebuilt by
    `loader(metadata, payload_bytes, model)` (which raises
    `ArchiveError` for weights that do not fit),
    trained by `trainer(model, key, **options)`, and stored with their weights in the archive
    member `payload` (default, for a built-in backend: its member in `BUILTIN_BACKENDS`)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a backend name must be a non-empty string; got {name!r}.")
    if payload is None and name in BUILTIN_BACKENDS:
        payload = BUILTIN_BACKENDS[name][0]
    if payload == _META or not isinstance(payload, str) or not payload:
        raise ValueError(f"backend {name!r}: `payload` must name an archive member other than {_META}; got {payload!r}.")
    if not callable(loader) or (trainer is not None and not callable(trainer)):
        raise TypeError(f"backend {name!r}: `loader` and `trainer` must be callables.")
    _REGISTRY[name] = Backend(name, payload, loader, trainer)


def backend_names() -> list[str]:
    """The names of the known backends (registered or built in)."""
    return sorted(set(_REGISTRY) | set(BUILTIN_BACKENDS))


def _payload_name(backend: str) -> str | None:
    if backend in _REGISTRY:
        return _REGISTRY[backend].payload
    return BUILTIN_BACKENDS[backend][0] if backend in BUILTIN_BACKENDS else None


def get_backend(name: str) -> Backend:
    """The registered backend `name`; a built-in one is imported (and so registered) on first use.
    Raises `ValueError` for an unknown name, and the backend's `ImportError` if its extra is missing."""
    if name not in _REGISTRY and name in BUILTIN_BACKENDS:
        importlib.import_module(BUILTIN_BACKENDS[name][1])
    if name not in _REGISTRY:
        if name in BUILTIN_BACKENDS:
            raise RuntimeError(f"importing {BUILTIN_BACKENDS[name][1]} did not register backend {name!r}.")
        raise ValueError(f"unknown backend {name!r}; known: {backend_names()}.")
    return _REGISTRY[name]


# ---------------------------------------------------------------------- writing


def write_archive(path: str | Path, *, backend: str, metadata: dict[str, Any], payload: bytes) -> None:
    """Write an estimator file: `metadata` (JSON-able) plus the format fields, and the weights
    `payload` in the member of `backend`.

    The write is atomic: a temporary file in the same directory is renamed over `path`, so an
    interrupted save never leaves a half-written estimator.
    """
    member = _payload_name(backend)
    if member is None:
        raise ValueError(f"unknown backend {backend!r}; known: {backend_names()}.")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot save to {str(path)!r}: directory {str(path.parent)!r} does not exist; create it first.")
    meta = {
        **metadata,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "nlme_ppl_version": __version__,
        "backend": backend,
        "leaves_sha256": hashlib.sha256(payload).hexdigest(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(_META, json.dumps(meta, indent=2, sort_keys=True))
                zf.writestr(member, payload)
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


# ---------------------------------------------------------------------- reading


def refuse(path, reason: str) -> NoReturn:
    """Raise the `ArchiveError` `cannot load estimator <path>: <reason>`."""
    raise ArchiveError(f"cannot load estimator {str(path)!r}: {reason}")


def read_archive(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The metadata and the weights of an estimator file, checked: a zip archive of this format,
    a supported version, a known backend, and weights that match their SHA-256.

    **Returns:** `(metadata, payload)`. Refused with an
    `ArchiveError` (a `ValueError`) saying why.
    """
    path = Path(path)
    not_ours = "it is not a nlme_ppl estimator file (expected a .nlp zip archive written by post.save)"
    if not zipfile.is_zipfile(path):
        refuse(path, f"{not_ours}; it is not a zip archive, or it is truncated.")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if _META not in names:
                refuse(path, f"{not_ours}; it holds {sorted(names)}, not {_META}.")
            try:
                meta = json.loads(zf.read(_META).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                refuse(path, f"its {_META} is not valid JSON ({e}); the file is corrupt.")
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                refuse(path, f"{not_ours}; its metadata names format {meta.get('format') if isinstance(meta, dict) else None!r}.")
            backend = meta.setdefault("backend", "flowjax")  # files before the sbi backend name none
            member = _payload_name(backend) if isinstance(backend, str) else None
            if member is None:
                refuse(path, f"its backend {backend!r} is not one this nlme_ppl knows ({backend_names()}); upgrade nlme_ppl.")
            if member not in names:
                refuse(path, f"{not_ours}; it holds {sorted(names)}, not {_META} and {member}.")
            payload = zf.read(member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as e:
        refuse(path, f"the file is corrupt ({e}); save or download it again.")
    version = meta.get("format_version")
    if version not in _SUPPORTED_VERSIONS:
        refuse(
            path,
            f"its format version {version!r} is not supported by this nlme_ppl (which reads versions "
            f"{list(_SUPPORTED_VERSIONS)}; the file was written by nlme_ppl {meta.get('nlme_ppl_version')!r}). "
            "Upgrade nlme_ppl or retrain the estimator.",
        )
    if hashlib.sha256(payload).hexdigest() != meta.get("leaves_sha256"):
        refuse(path, f"checksum mismatch: {member} does not match the SHA-256 in {_META}; the file is corrupt.")
    return meta, payload
