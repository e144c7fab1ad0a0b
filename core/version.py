"""vitreg's version, in a module every stage may import (the face re-exports it)."""

from __future__ import annotations

__version__ = "0.1.0"
