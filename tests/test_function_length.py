"""Product functions stay short (STYLE.md: a function does one thing): the
longest function of the installed packages is under `MAX_LINES` lines, read
from the source with `ast` (from `def` to its last line). Tests and
benchmarks are not product code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PRODUCT = ("core", "cache", "extract", "probe", "analysis", "study", "vitreg")
MAX_LINES = 50


def function_lengths(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(lines from `def` to the last line, `path:line name`) of every function and
    method of a file, nested ones too; decorators (a probe's option table) are
    declarations and do not count."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((node.end_lineno - node.lineno + 1,
                          f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return found


def long_functions(limit: int = MAX_LINES) -> list[str]:
    lengths = [item for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py"))
               for item in function_lengths(path)]
    return [f"{where} ({n} lines)" for n, where in sorted(lengths, reverse=True) if n >= limit]


def test_the_longest_product_function_is_under_50_lines():
    offenders = long_functions()
    assert not offenders, "\n".join(offenders)


def test_the_measure_counts_the_body_from_def_to_its_last_line(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("@dec(\n    x=1)\ndef f():\n    \'\'\'doc\'\'\'\n    return 1\n\n\n"
                      "class C:\n    def g(self):\n        pass\n")
    assert sorted(n for n, _ in function_lengths(source, tmp_path)) == [2, 3]
