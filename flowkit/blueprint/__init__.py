"""Blueprints: the immutable graph a flow compiles to, with analysis, lint and validation."""

from ._analysis import Analysis as Analysis
from ._analysis import analyze as analyze
from ._diff import BlueprintDiff as BlueprintDiff
from ._diff import Change as Change
from ._diff import diff as diff
from ._lint import LintIssue as LintIssue
from ._lint import lint as lint
from ._model import Blueprint as Blueprint
from ._model import EdgeSpec as EdgeSpec
from ._model import NodeConfig as NodeConfig
from ._model import NodeSpec as NodeSpec
from ._validate import validate as validate

__all__ = [
    "Analysis",
    "Blueprint",
    "BlueprintDiff",
    "Change",
    "EdgeSpec",
    "LintIssue",
    "NodeConfig",
    "NodeSpec",
    "analyze",
    "diff",
    "lint",
    "validate",
]
