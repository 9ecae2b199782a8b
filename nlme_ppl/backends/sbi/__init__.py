"""The sbi backend: neural posterior estimation with sbi, for simulators written in torch.

Needs the `[sbi]` extra (`pip install "nlme_ppl[sbi]"`); importing this module without it
raises an `ImportError` that says so. It is the only part of nlme_ppl that imports torch
or sbi, and no other module imports it: the archive registry (`nlme_ppl.io.serialization`)
imports it by name when an sbi file is loaded or `nlp.train(..., backend="sbi")` is called,
and importing it registers the backend's loader and trainer there.

- [`train_sbi`][nlme_ppl.backends.sbi.train_sbi] (also `nlp.train(model, key, backend="sbi")`)
  trains sbi's NPE with an embedding network for event rows, and returns an
  [`SbiPosterior`][nlme_ppl.backends.sbi.SbiPosterior] with the
  [`Posterior`][nlme_ppl.estimators.Posterior] interface of the flowjax estimators (`sample`,
  `log_prob`, `summaries`, `save`; `nlp.load_posterior` reads it back).
- [`TORCH_SIMULATORS`][nlme_ppl.backends.sbi.TORCH_SIMULATORS]: torch versions of
  `frohlich_sde` and `pk_oral_1cmt`; [`simulate_torch`][nlme_ppl.backends.sbi.simulate_torch]
  runs them, and [`torch_simulator`][nlme_ppl.backends.sbi.torch_simulator] makes one a
  `simulator` of `nlp.simulate` (locally, or on a dask cluster with `client=`).
"""

from ...io.serialization import register_backend as _register_backend
from ._config import SbiConfig as SbiConfig
from ._posterior import SbiPosterior as SbiPosterior
from ._train import simulate_torch as simulate_torch, train_sbi as train_sbi
from .simulators import (
    TORCH_SIMULATORS as TORCH_SIMULATORS,
    frohlich_sde_torch as frohlich_sde_torch,
    pk_oral_1cmt_torch as pk_oral_1cmt_torch,
    torch_prior as torch_prior,
    torch_simulator as torch_simulator,
)

_register_backend("sbi", loader=SbiPosterior.from_archive, trainer=train_sbi)

__all__ = ["SbiConfig", "SbiPosterior", "TORCH_SIMULATORS", "frohlich_sde_torch", "pk_oral_1cmt_torch", "simulate_torch", "torch_prior", "torch_simulator", "train_sbi"]
