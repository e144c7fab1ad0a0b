"""analysis stage of vitreg."""
