"""Tests of vitreg.analysis."""
