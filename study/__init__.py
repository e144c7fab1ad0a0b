"""`vitreg study`: the whole reproducibility study from one plan file."""
