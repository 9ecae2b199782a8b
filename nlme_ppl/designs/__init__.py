"""Design priors: what an estimator is trained on besides the training prior.

- [`like`][nlme_ppl.designs.like]: resample the individuals' own designs from a `Dataset`
  (with optional jitter of times and amounts, and scaling of the number of samples);
  `nlp.train(model, key, designs=data, ...)` trains on them in one call.
- [`check_designs`][nlme_ppl.designs.check_designs]: warn with a
  [`DesignWarning`][nlme_ppl.designs.DesignWarning] where a data set's designs lie outside what
  an estimator was trained on (run by `fit_map` and `fit_nuts`).
"""

from ._envelope import (
    DesignWarning as DesignWarning,
    builtin_record as builtin_record,
    check_designs as check_designs,
    design_problems as design_problems,
    envelope_of as envelope_of,
    merge_envelopes as merge_envelopes,
    record_of as record_of,
)
from ._like import CLIP_BOUND as CLIP_BOUND, DataDesigns as DataDesigns, data_hash as data_hash, like as like

__all__ = ["CLIP_BOUND", "DataDesigns", "DesignWarning", "builtin_record", "check_designs", "data_hash", "design_problems", "envelope_of",
           "like", "merge_envelopes", "record_of"]
