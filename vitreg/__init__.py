"""vitreg: cache a ViT's tokens once, then probe and analyse them offline."""

__version__ = "0.1.0"
