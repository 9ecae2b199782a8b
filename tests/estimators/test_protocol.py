"""The posterior protocol: what every estimator has, checked on the flowjax one (the sbi one is
checked in tests/backends/sbi/test_posterior.py)."""

import jax
import numpy as np

import nlme_ppl as nlp
from nlme_ppl.estimators import AmortizedPosterior, Posterior

from ._helpers import some_data, untrained_posterior

#: the members of the protocol (COMMON decision of issue 14; the protocol's own list must agree)
MEMBERS = {"model", "param_names", "backend", "sample", "log_prob", "summaries", "save", "to_archive", "from_archive"}


def test_the_protocol_lists_its_members():
    assert set(Posterior.__protocol_attrs__) == MEMBERS
    assert nlp.Posterior is Posterior and nlp.estimators.Posterior is Posterior


def test_amortized_posterior_is_a_posterior(tmp_path):
    post = untrained_posterior()
    assert isinstance(post, Posterior)
    assert [m for m in sorted(MEMBERS) if not hasattr(post, m)] == []
    assert post.backend == "flowjax" and isinstance(post.model, nlp.IndividualModel) and post.param_names == ("a", "b")
    data = some_data(3)
    draws = post.sample(data, jax.random.key(0), num_draws=4)
    assert draws.shape == (3, 4, 2) and post.log_prob(data, draws).shape == (3, 4)
    s = post.summaries(data)
    assert s is not None and np.asarray(s).shape == (3, post.config.summary_dim)
    meta, payload = post.to_archive()
    assert isinstance(payload, bytes) and {"config", "architecture", "history"} <= set(meta)
    back = AmortizedPosterior.from_archive(meta, payload, post.model)
    np.testing.assert_array_equal(back.sample(data, jax.random.key(0), num_draws=4), draws)


def test_an_object_without_a_member_is_not_a_posterior():
    class NoSummaries:
        model, param_names, backend = None, (), "toy"

        def sample(self, data, key, *, num_draws): ...
        def log_prob(self, data, params): ...
        def save(self, path): ...
        def to_archive(self): ...
        @classmethod
        def from_archive(cls, metadata, payload, model): ...

    assert not isinstance(NoSummaries(), Posterior)
    NoSummaries.summaries = lambda self, data: None  # an estimator without a summary network returns None
    assert isinstance(NoSummaries(), Posterior)
