"""Speed of nlme_ppl's sbi training loop against sbi's own NPE.train: the same 20k simulations,
the same GRU estimator, 3 epochs each (the loop is timed on its second run, warm).

    python benchmarks/sbi_loop_timing.py
"""
import time, warnings, jax, numpy as np, torch
import nlme_ppl as nlp
from nlme_ppl.backends.sbi import SbiConfig, simulate_torch, torch_prior
from nlme_ppl.backends.sbi._posterior import _rows, _builder, _fit
warnings.filterwarnings("ignore")
m = nlp.models.pk_oral_1cmt()
sims = simulate_torch(m, jax.random.key(0), num_simulations=20_000)
x = torch.tensor(_rows(m, sims.data)); theta = torch.tensor(np.asarray(sims.params, np.float32))
cfg = SbiConfig(embedding="gru", max_epochs=3, patience=3, batch_size=256, learning_rate=2e-3)
print("torch threads", torch.get_num_threads())
torch.manual_seed(0); _fit(cfg, theta, x, progress=False)
torch.manual_seed(0); t = time.perf_counter(); _fit(cfg, theta, x, progress=False); a = time.perf_counter() - t
from sbi.inference import NPE
build, emb = _builder(cfg, x.shape[-1]); emb.std.fit(x)
torch.manual_seed(0); inf = NPE(prior=torch_prior(m), density_estimator=build, show_progress_bars=False)
inf.append_simulations(theta, x)
t = time.perf_counter(); inf.train(training_batch_size=256, learning_rate=2e-3, max_num_epochs=2, stop_after_epochs=3); b = time.perf_counter() - t
print(f"3 epochs on 20k: nlme_ppl loop {a:.1f} s, sbi NPE.train {b:.1f} s, ratio {a / b:.2f}")
