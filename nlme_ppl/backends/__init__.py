"""Optional inference backends.

- `nlme_ppl.backends.sbi`: neural posterior estimation with sbi, for simulators written in
  torch (needs the `[sbi]` extra: `pip install "nlme_ppl[sbi]"`). It is the only part of
  nlme_ppl that imports torch or sbi; importing `nlme_ppl` does not.
"""
