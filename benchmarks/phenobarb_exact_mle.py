"""The exact maximum-likelihood fit of the phenobarbital example, an independent reference.

    python benchmarks/phenobarb_exact_mle.py

The model of examples/phenobarb.py (pk_iv_1cmt, log-normal CL and V with a diagonal covariance,
additive error) has two random effects per neonate, so each individual's marginal likelihood is a
2-D integral, computed here by a 60 x 60 Gauss-Hermite product rule, and the log-likelihood is
maximised by Nelder-Mead (scipy). Unlike R `nlme` (the Lindstrom-Bates linearisation), this is
the exact likelihood. Writes examples/data/phenobarb_exact_mle.csv; about 35 s.
"""
from pathlib import Path
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp
DATA = Path(__file__).parents[1] / "examples" / "data"
df = pd.read_csv(DATA / "phenobarb.csv")
x, w = np.polynomial.hermite_e.hermegauss(60)   # probabilists' Hermite: weight exp(-x^2/2)
lw = np.log(w) - 0.5 * np.log(2 * np.pi)
E1, E2 = np.meshgrid(x, x, indexing="ij"); LW = (lw[:, None] + lw[None, :]).ravel()
E1, E2 = E1.ravel(), E2.ravel()
subj = []
for _, g in df.groupby("ID"):
    d = g[g.EVID == 1]; o = g[g.EVID == 0]
    subj.append((d.TIME.to_numpy(), d.AMT.to_numpy(), o.TIME.to_numpy(), o.DV.to_numpy()))
def negll(p):
    mcl, mv, lscl, lsv, lsig = p
    scl, sv, sig = np.exp(lscl), np.exp(lsv), np.exp(lsig)
    CL = np.exp(mcl + scl * E1)[:, None, None]; V = np.exp(mv + sv * E2)[:, None, None]
    tot = 0.0
    for td, amt, to, y in subj:
        dt = to[None, :, None] - td[None, None, :]
        c = np.sum(np.where(dt > 0, amt / V * np.exp(-CL / V * np.where(dt > 0, dt, 0)), 0.0), axis=2)
        ll = -0.5 * np.sum(((y - c) / sig) ** 2, axis=1) - len(y) * (np.log(sig) + 0.5 * np.log(2 * np.pi))
        tot += logsumexp(ll + LW)
    return -tot
R = np.array([-5.0935582, 0.3426189, np.log(0.4398427), np.log(0.4504931), np.log(2.7935267)])
print("exact loglik at R nlme's estimate:", -negll(R))
res = minimize(negll, R, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000, "maxfev": 8000})
res = minimize(negll, res.x, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000})
p = res.x
print("exact MLE: mean[CL] %.4f mean[V] %.4f sd[CL] %.4f sd[V] %.4f sigma %.4f (log %.4f); loglik %.3f" % (p[0], p[1], np.exp(p[2]), np.exp(p[3]), np.exp(p[4]), p[4], -res.fun))
pd.DataFrame({"parameter": ["mean[CL]", "mean[V]", "sd[CL]", "sd[V]", "mean[sigma_add]", "loglik", "loglik_at_nlme"],
              "estimate": [p[0], p[1], np.exp(p[2]), np.exp(p[3]), p[4], -res.fun, -negll(R)]}).to_csv(DATA / "phenobarb_exact_mle.csv", index=False)
