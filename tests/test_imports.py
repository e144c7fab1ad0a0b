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


#: Product code outside `cache/` (the face `vitreg/` included).
PRODUCT = ("core", *STAGES, "study", "vitreg")


def test_only_cache_imports_zarr_the_face_included():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for folder in PRODUCT for path in sources(folder)
             for line, module in imports(path) if module.split(".")[0] == "zarr"]
    assert not wrong, "\n".join(wrong)


#: Array names that are no ordinary word: a literal of one is always an array path.
DISTINCT = ("neighbor_cos", "qkv_norms")
#: Store methods (and the analysis helpers over them) whose string arguments are array names.
READS = ("array", "reader", "take", "batches", "read_rows", "read_sample")
#: Names of the dicts that `Store.batches` and the read helpers return, keyed by array name.
BATCHES = ("batch", "b", "blocks")


def array_paths(path: Path) -> list[tuple[int, str]]:
    """(line, literal) of every array path spelt as a string in `path`.

    `key`, `label`, `norms`, `tokens`, `pixels` ... are also plain words (a
    dict key, an analysis, a `--with` option), so they count only where they
    name a store's array: an argument of a read (`store.array("norms")`), the
    left of `in store`, or a key of a batch. Names with a '/' and the
    `DISTINCT` names count everywhere.
    """
    from vitreg.cache.schema import ARRAYS

    def literals(node: ast.AST) -> list[ast.Constant]:
        items = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else [node]
        return [n for n in items if isinstance(n, ast.Constant) and n.value in ARRAYS]

    def name_of(node: ast.AST) -> str:
        return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        hits: list[ast.Constant] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value in ARRAYS and ("/" in node.value or node.value in DISTINCT):
            hits = [node]
        elif isinstance(node, ast.Call) and name_of(node.func) in READS:
            hits = [c for arg in node.args for c in literals(arg)]
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)) \
                and (name_of(node.comparators[0]).endswith("store")
                     or name_of(node.comparators[0]) == "s"):
            hits = literals(node.left)
        elif isinstance(node, ast.Subscript) and name_of(node.value) in BATCHES:
            hits = literals(node.slice)
        found += [(hit.lineno, hit.value) for hit in hits]
    return sorted(set(found))


def test_no_array_path_is_spelt_outside_cache():
    """Array names are `vitreg.cache.names` constants outside `cache/`."""
    wrong = [f"{path.relative_to(ROOT)}:{line} spells {value!r}: use vitreg.cache.names"
             for folder in PRODUCT for path in sources(folder)
             for line, value in array_paths(path)]
    assert not wrong, "\n".join(wrong)


def test_the_array_path_checker_sees_them(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text(
        'a = store.array("norms")[:]\nb = "pooled/cls"\nif "pixels" in part.store: pass\n'
        'c = batch["label"]\nd = {"norms": 1, "key": 2}\ne = options["tokens"]\n'
        'f = read_sample(store, ["norms", "tokens"], 4, 0)\ng = "qkv_norms"\n')
    assert array_paths(bad) == [(1, "norms"), (2, "pooled/cls"), (3, "pixels"), (4, "label"),
                                (7, "norms"), (7, "tokens"), (8, "qkv_norms")]
