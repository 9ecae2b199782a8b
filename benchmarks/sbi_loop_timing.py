"""Speed of nlme_ppl's sbi training loop against sbi's own NPE.train: the same 20k simulations,
the same GRU estimator, 3 epochs each (the loop is timed on its second run, warm).

    python benchmarks/sbi_loop_timing.py
"""

import time
import warnings

import jax
import numpy as np
import torch

import nlme_ppl as nlp
from nlme_ppl.backends.sbi import SbiConfig, simulate_torch, torch_prior
from nlme_ppl.backends.sbi._posterior import _builder, _fit, _rows


def main():
    from sbi.inference import NPE

    warnings.filterwarnings("ignore")
    model = nlp.models.pk_oral_1cmt()
    sims = simulate_torch(model, jax.random.key(0), num_simulations=20_000)
    x = torch.tensor(_rows(model, sims.data))
    theta = torch.tensor(np.asarray(sims.params, np.float32))
    config = SbiConfig(embedding="gru", max_epochs=3, patience=3, batch_size=256, learning_rate=2e-3)
    print("torch threads", torch.get_num_threads())

    torch.manual_seed(0)
    _fit(config, theta, x, progress=False)  # warm-up run
    torch.manual_seed(0)
    t = time.perf_counter()
    _fit(config, theta, x, progress=False)
    ours = time.perf_counter() - t

    build, embedding = _builder(config, x.shape[-1])
    embedding.std.fit(x)
    torch.manual_seed(0)
    inference = NPE(prior=torch_prior(model), density_estimator=build, show_progress_bars=False)
    inference.append_simulations(theta, x)
    t = time.perf_counter()
    inference.train(training_batch_size=256, learning_rate=2e-3, max_num_epochs=2, stop_after_epochs=3)  # sbi runs max + 1 epochs
    theirs = time.perf_counter() - t
    print(f"3 epochs on 20k: nlme_ppl loop {ours:.1f} s, sbi NPE.train {theirs:.1f} s, ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
