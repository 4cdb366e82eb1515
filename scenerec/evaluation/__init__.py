"""Evaluation: metrics on arrays, the harness (`evaluate`), the methods it ranks with, and report files."""

from .harness import Comparison, EvalReport, evaluate
from .methods import BASELINES, METHODS, EvalData, MethodUnavailableError, RankingMethod, make_method
from .report import write_report

__all__ = [
    "BASELINES", "METHODS", "Comparison", "EvalData", "EvalReport", "MethodUnavailableError", "RankingMethod",
    "evaluate", "make_method", "write_report",
]
