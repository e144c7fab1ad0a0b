"""`python -m vitreg.probe KIND STORE --out FILE.json` (same as `vitreg probe`)."""

from .cli import probe

if __name__ == "__main__":
    probe(prog_name="vitreg probe")
