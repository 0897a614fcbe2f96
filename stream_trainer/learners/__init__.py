"""The learners: rule trust and per-variable AR(p) forecasters, behind one small API."""

from stream_trainer.learners.base import Flushed, Learner, LearnResult
from stream_trainer.learners.forecaster import Forecaster
from stream_trainer.learners.trust import TrustLearner


def warm_up() -> None:
    """Compile every learner kernel (or load it from numba's cache) before it is needed."""
    from stream_trainer.learners import _forecaster_kernel, _trust_kernel

    _forecaster_kernel.warm_up()
    _trust_kernel.warm_up()


__all__ = ["Flushed", "Forecaster", "LearnResult", "Learner", "TrustLearner", "warm_up"]
