"""Decoding: multi-sample generation, teacher-forced scoring, continuation for pause-and-revise."""

from calib.decode.generate import generate
from calib.decode.score import FullECEStats, score, score_with_stats
from calib.decode.types import Generations

__all__ = ["FullECEStats", "Generations", "generate", "score", "score_with_stats"]
