"""analysis stage of vitreg: norm distributions, outlier threshold, neighbour
similarity, attention and feature maps, and one self-contained HTML report."""

from __future__ import annotations

from .common import ANALYSES, register_analysis, unregister_analysis
from .maps import run_maps
from .norms import run_norms
from .report import run_report
from .similarity import run_similarity

__all__ = ["ANALYSES", "register_analysis", "run_maps", "run_norms", "run_report",
           "run_similarity", "unregister_analysis"]
