"""Train a shipped pretrained estimator from its recipe in PRETRAINED_CONFIGS.

Usage: python scripts/train_pretrained.py NAME OUT.nlp [LOSS.png]
"""

import importlib
import sys
import time

import jax

import nlme_ppl as nlp
from nlme_ppl.estimators import PRETRAINED_CONFIGS, train

name, out = sys.argv[1], sys.argv[2]
plot = sys.argv[3] if len(sys.argv) > 3 else None
num_simulations, config, seed = PRETRAINED_CONFIGS[name]
print(f"{name}: num_simulations={num_simulations} seed={seed}\n{config}", flush=True)
t0 = time.perf_counter()
post = train(nlp.models.get(name), jax.random.key(seed), num_simulations=num_simulations, config=config,
             loss_plot=plot)
wall = time.perf_counter() - t0
h = post.history
print(f"wall {wall:.1f}s (simulate {h.simulate_seconds:.1f}s, train {h.train_seconds:.1f}s), epochs {h.epochs}, "
      f"best epoch {h.best_epoch + 1}, best val loss {h.best_val_loss:.4f}", flush=True)
# Fallback copy of the weights (no pickle), in case saving fails.
import equinox as eqx  # noqa: E402

eqx.tree_serialise_leaves(f"/tmp/{name}_fallback.eqx", (post.summary, post.flow, post.param_loc, post.param_scale))
import nlme_ppl.io.serialization as ser  # noqa: E402

ser = importlib.reload(ser)
ser.save_posterior(post, out)
print(f"saved {out}", flush=True)
