"""The design envelope of an estimator: what its training designs covered (doses per
individual, follow-up, samples, routes, steady state, resets, amounts), and the check that a
data set's designs lie inside it (`check_designs`, run by `fit_map` and `fit_nuts`)."""

from __future__ import annotations

import json
import warnings

import jax
import numpy as np

from ..data import Dataset

__all__ = ["DesignWarning", "builtin_record", "check_designs", "design_problems", "envelope_of", "merge_envelopes", "record_of"]

#: Continuous quantities (follow-up, amounts) may exceed the trained range by this share before
#: the check flags them: the envelope of a sampled design prior is itself an estimate.
MARGIN = 0.1


class DesignWarning(UserWarning):
    """A data set's designs lie outside what the estimator was trained on (more doses, longer
    follow-up, a route or steady state it never saw): its posteriors there are extrapolations.
    Train on the data's own designs: `nlme-ppl train --model NAME --designs-from data.csv`."""


def _route(model, cmt: int, infusion: bool) -> str:
    where = dict(model.dose_compartments).get(int(cmt), "unknown") if model is not None else "?"
    return f"CMT {int(cmt)} ({where}{' infusion' if infusion else ' bolus'})"


def envelope_of(data: Dataset) -> dict:
    """What the designs of `data` cover, as JSON: `max_doses`, `max_observations`, `max_time`
    (the latest sample or dose), `amount` `[min, max]`, `routes` (`[CMT, "bolus"|"infusion"]`
    pairs), `steady_state`, `resets`."""
    mask = np.asarray(data.mask, bool)
    times = np.where(mask, np.asarray(data.times), -np.inf)
    out = {"max_observations": int(mask.sum(1).max(initial=0)), "max_time": float(times.max(initial=0.0))}
    d = data.doses
    if d is None:
        return {**out, "max_doses": 0, "routes": [], "amount": None, "steady_state": False, "resets": False}
    dm = np.asarray(d.mask, bool)
    amounts, rates, cmt = np.asarray(d.amounts), np.asarray(d.rates), np.asarray(d.cmt)
    routes = sorted({(int(c), "infusion" if r > 0 else "bolus") for c, r in zip(cmt[dm], rates[dm])})
    last_dose = float(np.where(dm, np.asarray(d.times), -np.inf).max(initial=0.0))
    return {
        **out,
        "max_time": max(out["max_time"], last_dose),
        "max_doses": int(dm.sum(1).max(initial=0)),
        "amount": [float(amounts[dm].min()), float(amounts[dm].max())] if dm.any() else None,
        "routes": [list(r) for r in routes],
        "steady_state": bool(d.steady_state.any()),
        "resets": bool(d.reset.any()),
    }


def merge_envelopes(a: dict, b: dict) -> dict:
    """The envelope covering both `a` and `b`."""
    amounts = [x for x in (a.get("amount"), b.get("amount")) if x]
    return {
        "max_observations": max(a["max_observations"], b["max_observations"]),
        "max_time": max(a["max_time"], b["max_time"]),
        "max_doses": max(a.get("max_doses", 0), b.get("max_doses", 0)),
        "amount": [min(x[0] for x in amounts), max(x[1] for x in amounts)] if amounts else None,
        "routes": [list(r) for r in sorted({tuple(r) for r in a.get("routes", []) + b.get("routes", [])})],
        "steady_state": bool(a.get("steady_state") or b.get("steady_state")),
        "resets": bool(a.get("resets") or b.get("resets")),
    }


def record_of(kind: str, data: Dataset, **extra) -> dict:
    """An estimator file's `designs` block: `kind` ("builtin" or "like"), what the training
    designs covered (`envelope`, from the training simulations `data`), and `extra` entries."""
    return {"kind": kind, **extra, "envelope": envelope_of(data)}


def builtin_record(model, *, num: int = 4096) -> dict:
    """The `designs` block of an estimator without one (older files): the envelope of `num`
    designs of `model`'s design prior (key 0), `{"kind": "builtin", "sampled": num, ...}`."""
    return json.loads(_builtin_json(model, num))


_CACHE: dict = {}


def _builtin_json(model, num: int) -> str:
    key = (model.name, model.fingerprint(), id(model.design_prior), num)
    if key not in _CACHE:
        designs = jax.device_get(model.sample_designs(jax.random.key(0), num))
        data = _designs_dataset(designs)
        _CACHE[key] = json.dumps({"kind": "builtin", "sampled": num, "envelope": envelope_of(data)})
    return _CACHE[key]


def _designs_dataset(designs) -> Dataset:
    from ..data import Doses

    mask = np.asarray(designs["mask"], bool)
    n = mask.shape[0]
    return Dataset(times=np.where(mask, designs["times"], 0.0), values=np.zeros(mask.shape), mask=mask,
                   ids=tuple(str(i) for i in range(n)), doses=Doses.from_design(designs))  # fmt: skip


def design_problems(envelope: dict, data: Dataset, model=None, *, margin: float = MARGIN) -> list[str]:
    """What in `data`'s designs lies outside `envelope` ([`envelope_of`][nlme_ppl.designs.envelope_of]),
    each naming the first individual concerned; empty when all lie inside."""
    ids, problems = data.ids, []
    mask = np.asarray(data.mask, bool)
    n_obs = mask.sum(1)
    last = np.where(mask, np.asarray(data.times), -np.inf).max(1, initial=0.0)

    def first(bad, what):
        i = int(np.flatnonzero(bad)[0])
        problems.append(f"{int(bad.sum())} individual(s), the first {ids[i]!r}: {what(i)}")

    if (bad := n_obs > envelope["max_observations"]).any():
        first(bad, lambda i: f"{int(n_obs[i])} samples, more than the {envelope['max_observations']} trained")
    d = data.doses
    if d is not None:
        dm = np.asarray(d.mask, bool)
        last = np.maximum(last, np.where(dm, np.asarray(d.times), -np.inf).max(1, initial=0.0))
        nd = dm.sum(1)
        if (bad := nd > envelope.get("max_doses", 0)).any():
            first(bad, lambda i: f"{int(nd[i])} doses, more than the {envelope.get('max_doses', 0)} trained")
        trained = {(int(c), k) for c, k in envelope.get("routes", [])}
        rates, cmt = np.asarray(d.rates), np.asarray(d.cmt)
        kinds = np.where(rates > 0, "infusion", "bolus")
        unseen = dm & ~np.array([[(int(c), k) in trained for c, k in zip(rc, rk)] for rc, rk in zip(cmt, kinds)]).reshape(dm.shape)
        if unseen.any():
            i, j = map(int, np.argwhere(unseen)[0])
            seen = ", ".join(_route(model, c, k == "infusion") for c, k in sorted(trained)) or "none"
            problems.append(f"{int(unseen.any(1).sum())} individual(s), the first {ids[i]!r}: a dose by "
                            f"{_route(model, cmt[i, j], kinds[i, j] == 'infusion')}, a route never trained (trained: {seen})")  # fmt: skip
        if (bad := d.steady_state.any(1)).any() and not envelope.get("steady_state", False):
            first(bad, lambda i: "a steady-state dose (SS), and the estimator was trained on none")
        if (bad := d.reset.any(1)).any() and not envelope.get("resets", False):
            first(bad, lambda i: "a reset (EVID 3/4 or SS=1), and the estimator was trained on none")
        if envelope.get("amount") and dm.any():
            lo, hi = envelope["amount"]
            amounts = np.asarray(d.amounts)
            out = dm & ((amounts > hi * (1 + margin)) | (amounts < lo / (1 + margin)))
            if (bad := out.any(1)).any():
                first(bad, lambda i: f"dose amounts {np.round(amounts[i][out[i]], 4).tolist()} outside the trained "
                                     f"{lo:.4g}–{hi:.4g}")  # fmt: skip
    if (bad := last > envelope["max_time"] * (1 + margin)).any():
        first(bad, lambda i: f"follow-up to time {last[i]:.4g}, longer than the trained {envelope['max_time']:.4g}")
    return problems


def _record(posterior) -> dict | None:
    while posterior is not None:
        rec = getattr(posterior, "design_record", None)
        if rec:
            return json.loads(rec) if isinstance(rec, str) else rec
        posterior = getattr(posterior, "base", None)
    return None


def check_designs(posterior, data: Dataset, *, stacklevel: int = 2) -> tuple[str, ...]:
    """Warn with a [`DesignWarning`][nlme_ppl.designs.DesignWarning] where `data`'s designs lie
    outside what `posterior` was trained on: more doses or samples, longer follow-up, a route,
    steady state or resets it never saw, amounts out of range. The trained envelope is the
    file's `designs` block, or for older files the envelope of the model's design prior.

    **Returns:** the problems found, one line each (empty when the designs lie inside).
    """
    model = getattr(posterior, "model", None)
    record = _record(posterior)
    if record is None:  # a file from before designs were recorded: the envelope of the model's design prior
        if model is None or getattr(model, "design_prior", None) is None:
            return ()
        record = builtin_record(model)
    problems = design_problems(record["envelope"], data, model)
    if problems:
        name = getattr(model, "name", "the model")
        warnings.warn(
            f"the data's designs lie outside what this {name} estimator was trained on ({record.get('kind', 'builtin')} "
            f"designs): " + "; ".join(problems) + ". Its posteriors there are extrapolations. What to do: train an "
            f"estimator on this data's own designs, `nlme-ppl train --model {name} --designs-from DATA.csv --out est.nlp` "
            "(or nlp.train(model, key, designs=data, num_simulations=...)), and fit with --estimator est.nlp.",
            DesignWarning,
            stacklevel=stacklevel + 1,
        )
    return tuple(problems)

