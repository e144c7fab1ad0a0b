"""cache_schema.md and cache/schema.py describe the same store."""

from __future__ import annotations

import re
from pathlib import Path

from vitreg.cache import ARRAYS, SCHEMA_VERSION
from vitreg.cache.schema import ALLOWED_CODECS, ALLOWED_DTYPES

DOC = (Path(__file__).parents[2] / "cache_schema.md").read_text()


def doc_table(header: str) -> list[list[str]]:
    """Rows of the markdown table whose header line starts with `header`."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append([cells[0].strip("`"), *cells[1:]])
    return rows


def test_version_matches():
    assert re.search(r"\*\*Schema version: ([0-9.]+)\*\*", DOC).group(1) == SCHEMA_VERSION
    assert f"**{SCHEMA_VERSION}**" in DOC.split("## Changelog")[1]


def test_array_table_matches_code():
    rows = doc_table("| name | dims | dtype |")
    documented = {name: (tuple(d.strip() for d in dims.split(",")), dtype, meaning)
                  for name, dims, dtype, meaning in rows}
    assert documented.keys() == ARRAYS.keys()
    for name, spec in ARRAYS.items():
        dims, dtype, meaning = documented[name]
        assert dims == spec.dims, name
        assert dtype == spec.dtype, name
        assert meaning == spec.doc, name


def test_allow_lists_match_code():
    section = DOC.split("## Codecs and safety")[1].split("##")[0]
    codecs = set(re.findall(r"`([a-z0-9_-]+)`", section.split("Allowed dtypes")[0]))
    assert codecs == ALLOWED_CODECS
    dtypes_text = section.split("Allowed dtypes:")[1].split(".")[0]
    assert {d.strip() for d in dtypes_text.replace("\n", " ").split(",")} == ALLOWED_DTYPES
