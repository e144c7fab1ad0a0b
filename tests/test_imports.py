"""The layering of DESIGN.md, read from the source: stages never import each
other nor the command-line face, `cache` imports no stage, `core` nothing of
vitreg but itself, `study` the stages but not the face, and only `cache`
imports zarr."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
STAGES = ("extract", "probe", "analysis")
#: folder -> the vitreg packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "cache": {"core"},
    **{stage: {"core", "cache"} for stage in STAGES},
    "study": {"core", "cache", *STAGES},  # above the stages, beside the face
}


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
    """`vitreg.cache.store` -> `cache`; `vitreg` or `vitreg.cli` -> `face`."""
    parts = module.split(".")
    if parts[0] != "vitreg":
        return None
    if len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return "face"


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_layering(folder):
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
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
