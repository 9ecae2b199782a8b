"""Shipped pretrained estimators (`<model name>.nlp`), loaded by `nlme_ppl.pretrained(name)`."""
