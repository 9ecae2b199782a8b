"""Covariance of the population estimates: the inverse Hessian (the usual "R⁻¹" standard
errors) and the robust sandwich R⁻¹ S R⁻¹, with S = Σ_i s_i s_iᵀ the outer products of the
individuals' score vectors (NONMEM's default `$COV` matrix; Huber 1967, White 1982). Both are
computed in the unconstrained coordinates z of the fit and mapped to the labelled parameters
(`mean[CL]`, `sd[CL]`, ...) by the delta method."""

from __future__ import annotations

import numpy as np
import pandas as pd
from jaxtyping import Float

__all__ = ["Covariances", "label_covariances", "correlation_frame"]


class Covariances:
    """`hessian` and `robust` `(L, L)` covariances of the labelled estimates (NaN where the
    Hessian is not positive definite), in `labels` order."""

    def __init__(self, labels, hessian, robust):
        self.labels, self.hessian, self.robust = list(labels), hessian, robust

    def stderr(self, robust: bool = False) -> dict[str, float]:
        cov = self.robust if robust else self.hessian
        return {k: float(np.sqrt(v)) if np.isfinite(v) and v >= 0 else float("nan") for k, v in zip(self.labels, np.diag(cov))}


def label_covariances(hess: Float[np.ndarray, "d d"], scores: Float[np.ndarray, "n d"], jac: Float[np.ndarray, "p d"], labels) -> Covariances:
    """The Hessian and sandwich covariances of the labelled parameters, from the Hessian `hess`
    of the objective in z, the per-individual scores `(N, d)` and the Jacobian `jac` of the
    labelled parameters in z (all at the estimate)."""
    nan = np.full((len(labels), len(labels)), np.nan)
    try:
        chol = np.linalg.cholesky(np.asarray(hess, np.float64))
    except np.linalg.LinAlgError:
        return Covariances(labels, nan, nan)
    inv_chol = np.linalg.inv(chol)
    cov_z = inv_chol.T @ inv_chol
    jac = np.asarray(jac, np.float64)
    s = np.asarray(scores, np.float64)
    robust_z = cov_z @ (s.T @ s) @ cov_z
    return Covariances(labels, jac @ cov_z @ jac.T, jac @ robust_z @ jac.T)


def correlation_frame(cov: np.ndarray, labels) -> pd.DataFrame:
    """The correlation matrix of the estimates as a labelled DataFrame."""
    sd = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    # exactly 1 on the diagonal where defined (var / (sd * sd) rounds to 1 ± 2e-16)
    diag = np.einsum("ii->i", corr)
    diag[np.isfinite(diag)] = 1.0
    return pd.DataFrame(corr, index=pd.Index(labels, name="parameter"), columns=list(labels))
