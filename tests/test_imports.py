"""The layering of DESIGN.md, read from the source: stages never import each
other nor the command-line face, `cache` imports no stage, `core` nothing of
vitreg but itself (and not click), the command-line boundary
(`vitreg/boundary.py`) only `core`, `study` the stages but not the face, and
only `cache` imports zarr."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
STAGES = ("extract", "probe", "analysis")
#: folder -> the vitreg packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "boundary": {"core"},  # vitreg/boundary.py: errors -> exit status, click types
    "cache": {"core", "boundary"},
    **{stage: {"core", "cache", "boundary"} for stage in STAGES},
    "study": {"core", "cache", "boundary", *STAGES},  # above the stages, beside the face
}
#: parts that are one file rather than a folder
FILES = {"boundary": ROOT / "vitreg" / "boundary.py"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative
    imports stay inside their package and are resolved to it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, f"vitreg.{path.parent.name}"))
            elif node.module:
                found.append((node.lineno, node.module))
                if node.module == "vitreg":  # `from vitreg import cache`
                    found += [(node.lineno, f"vitreg.{a.name}") for a in node.names]
    return found


def vitreg_part(module: str) -> str | None:
    """`vitreg.cache.store` -> `cache`; `vitreg.boundary` -> `boundary`; `vitreg` or
    `vitreg.cli` -> `face`."""
    parts = module.split(".")
    if parts[0] != "vitreg":
        return None
    if len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return "face"


def sources(part: str) -> list[Path]:
    return [FILES[part]] if part in FILES else sorted((ROOT / part).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_layering(folder):
    wrong = []
    for path in sources(folder):
        for line, module in imports(path):
            part = vitreg_part(module)
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if part is not None and part != folder and part not in ALLOWED[folder]:
                wrong.append(where)
            if module.split(".")[0] == "zarr" and folder != "cache":
                wrong.append(where + " (only cache/ knows zarr)")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import zarr\nfrom vitreg.probe import run\nfrom vitreg import __version__\n")
    parts = [vitreg_part(m) for _, m in imports(bad)]
    assert parts == [None, "probe", "face", "face"]


def test_core_imports_neither_click_nor_a_stage():
    """`core` is what every stage and the command line stand on: no click (the
    boundary, `vitreg/boundary.py`, holds the click types), no stage, no face."""
    wrong = []
    for path in sources("core"):
        for line, module in imports(path):
            top = module.split(".")[0]
            part = vitreg_part(module)
            if top == "click" or top in (*STAGES, "cache", "study") or \
                    part not in (None, "core"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)
