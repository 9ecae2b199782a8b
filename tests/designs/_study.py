"""A small synthetic IV study (1-compartment boluses or infusions), written as NONMEM CSV."""

import numpy as np

import nlme_ppl as nlp


def iv_study(n=12, doses=4, seed=0, rate=0.0, follow=24.0, samples=5, path=None):
    rng = np.random.default_rng(seed)
    k = [doses + (i % 2) for i in range(n)]  # 4 or 5 doses: individuals differ
    doses_ = nlp.Doses.from_individuals([np.arange(j) * 12.0 for j in k], [np.full(j, 100.0 + 10 * i) for i, j in enumerate(k)],
                                        rates=[np.full(j, rate) for j in k], cmt=[np.ones(j, int) for j in k])  # fmt: skip
    times = [np.sort(rng.uniform(0.5, (j - 1) * 12.0 + follow, samples + i % 3)) for i, j in enumerate(k)]
    cl, v = np.exp(1.0 + 0.3 * rng.normal(size=n)), np.exp(3.5 + 0.2 * rng.normal(size=n))
    vals = []
    for i in range(n):
        d = doses_.subset(np.array([i]))
        c = nlp.models.iv_one_compartment_concentration(times[i], d.times[0], d.amounts[0], d.rates[0], d.cmt[0], d.mask[0], cl[i], v[i])
        vals.append(np.asarray(c) + 0.1 * rng.normal(size=len(times[i])))
    data = nlp.Dataset.from_individuals(times, vals, doses=doses_, covariates={"WT": rng.uniform(50, 90, n)})
    if path is not None:
        nlp.write_nonmem(data, path)
        data = nlp.read_nonmem(path)
    return data
