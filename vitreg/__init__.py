"""vitreg: cache a ViT's tokens once, then probe and analyse them offline."""

from vitreg.core.version import __version__

__all__ = ["__version__"]
