"""Render a report.html to a PNG in headless Chromium, to look at it as a browser shows it.

    python -m tests.test_analysis.render REPORT.html OUT.png [--width 1400 --height 4000]
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import click

#: Executable names of Chromium, Debian's first.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None when none is installed."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def render_png(
    html: str | Path, png: str | Path, *, width: int = 1400, height: int = 4000,
    timeout: float = 120.0,
) -> Path:
    """Screenshot `html` (a file) into `png` with a fresh, offline, headless profile."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found; on Debian: apt-get install chromium")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vitreg-chromium-") as profile:
        subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--screenshot={png}", f"--window-size={width},{height}",
             Path(html).resolve().as_uri()],
            check=True, capture_output=True, timeout=timeout,
        )
    if not png.exists():
        raise RuntimeError(f"Chromium wrote no screenshot for {html}")
    return png


@click.command()
@click.argument("html", type=click.Path(exists=True, dir_okay=False))
@click.argument("png", type=click.Path(dir_okay=False))
@click.option("--width", default=1400, show_default=True)
@click.option("--height", default=4000, show_default=True)
def main(html: str, png: str, width: int, height: int) -> None:
    click.echo(render_png(html, png, width=width, height=height))


if __name__ == "__main__":
    main()
