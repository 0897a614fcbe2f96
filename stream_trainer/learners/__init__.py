"""The learners: rule trust and per-variable AR(p) forecasters, behind one small API."""

from stream_trainer.learners.base import Learner, LearnResult
from stream_trainer.learners.forecaster import Forecaster
from stream_trainer.learners.trust import TrustLearner

__all__ = ["Forecaster", "LearnResult", "Learner", "TrustLearner"]
