"""probe stage of vitreg."""
