"""extract stage of vitreg."""
