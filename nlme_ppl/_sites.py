"""Reading the individual-parameter sites of a population program: the one site reader shared by
the amortized surrogate (`likelihood`), the exact hierarchical model (`inference.exact`) and
`simulate_population`.

A population program declares each individual parameter φ inside
`numpyro.plate("individuals", N)`, either as a site named after the parameter, or as one vector
site whose `infer={"individual_params": names}` lists the parameters of its last axis. This
module finds those sites in NumPyro messages and checks them, with one set of messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["SiteReader", "check_factor_name", "missing_sites_error", "site_columns"]


def missing_sites_error(missing: Sequence[str]) -> ValueError:
    """The error for a population program without a site for some individual parameters."""
    return ValueError(
        f"the population program declares no site for individual parameter(s) {list(missing)}; add "
        "numpyro.sample(name, ...) inside numpyro.plate('individuals', N) for each (use dist.Delta "
        "for a parameter without random effect), or one vector site with "
        "infer={'individual_params': names}."
    )


def check_factor_name(site: str, names) -> None:
    """Refuse a likelihood factor named `site` when the population program already has a site of
    that name (`names`: the names of its sites)."""
    if site in names:
        raise ValueError(
            f"the population program has a site named {site!r}, the name of the likelihood factor; "
            "pass site=... with another name (e.g. site='loglik'), or rename that site."
        )


class SiteReader:
    """Claims sample sites for the individual parameters `param_names`, site by site.

    `claim(msg)` returns the parameters a NumPyro sample message declares (or `None` for a
    population-level site), refusing unknown parameters and parameters declared twice;
    `check_complete()` refuses a program that left some parameter without a site.
    `owner` maps each claimed parameter to its site, in claim order.
    """

    def __init__(self, param_names: Sequence[str]):
        self.param_names = tuple(param_names)
        self.index = {p: i for i, p in enumerate(self.param_names)}
        self.owner: dict[str, str] = {}

    def names(self, msg: Mapping) -> tuple[str, ...] | None:
        """The individual parameters a sample message declares, unchecked: by its name, or by
        `infer["individual_params"]`; `None` for any other site."""
        if msg.get("type") != "sample":
            return None
        if msg["name"] in self.index:
            return (msg["name"],)
        names = (msg.get("infer") or {}).get("individual_params")
        return tuple(names) if names is not None else None

    def claim(self, msg: Mapping) -> tuple[str, ...] | None:
        """`names(msg)`, checked and recorded."""
        names = self.names(msg)
        if names is None:
            return None
        site = msg["name"]
        for p in names:
            if p not in self.index:
                raise ValueError(f"site {site!r} claims unknown individual parameter {p!r}; the model's parameters are {self.param_names}.")
            if p in self.owner:
                raise ValueError(f"individual parameter {p!r} is declared twice (sites {self.owner[p]!r} and {site!r}); declare it once.")
            self.owner[p] = site
        return names

    def indices(self, names: Sequence[str]) -> np.ndarray:
        """The columns of `names` in `param_names` order."""
        return np.array([self.index[p] for p in names])

    def check_complete(self) -> None:
        missing = [p for p in self.param_names if p not in self.owner]
        if missing:
            raise missing_sites_error(missing)


def site_columns(msg: Mapping, names: tuple[str, ...], n: int) -> jnp.ndarray:
    """The `(n, len(names))` values of a claimed site for `n` individuals: a scalar site per
    parameter, or one vector site with event shape `(len(names),)`; a value outside the plate
    (one value for everyone) is broadcast."""
    site = msg["name"]
    value = jnp.asarray(msg["value"])
    event = tuple(msg["fn"].event_shape)
    if event == () and len(names) == 1:
        if value.shape not in ((), (n,)):
            raise ValueError(
                f"site {site!r} has value shape {value.shape}; expected ({n},), one value per individual. "
                f"Declare it inside numpyro.plate('individuals', {n})."
            )
        return jnp.broadcast_to(value, (n,))[:, None]
    if event == (len(names),) and value.shape in (event, (n, *event)):
        return jnp.broadcast_to(value, (n, *event))
    raise ValueError(
        f"site {site!r} covers individual parameter(s) {names} but has event shape {event} and value "
        f"shape {value.shape}; expected a scalar site per parameter, or one vector site with event "
        f"shape ({len(names)},) inside numpyro.plate('individuals', {n})."
    )
