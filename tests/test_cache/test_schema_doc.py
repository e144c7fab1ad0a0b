"""cache_schema.md and cache/schema.py describe the same store."""

from __future__ import annotations

import re
from pathlib import Path

from vitreg.cache import (
    ARRAYS,
    SCHEMA_VERSION,
    WITH_OPTIONS,
    Geometry,
    arrays_for,
    create_store,
    stored_arrays,
)
from vitreg.cache.schema import ALLOWED_CODECS, ALLOWED_DTYPES
from vitreg.testing import synthetic_attrs

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


def test_codecs_of_a_created_store_are_the_documented_ones(tmp_path):
    """"Compression: none": numbers get `bytes`, strings `vlen-utf8`, then every
    array the `crc32c` checksum."""
    section = DOC.split("## Codecs and safety")[1].split("##")[0]
    assert "Compression: none." in section
    geom = Geometry(registers=2, grid=(2, 2), dim=4, depth=2, img_size=28)
    root = create_store(str(tmp_path / "s"), geometry=geom, n_rows=3, chunk_rows=2,
                        specs=arrays_for(sorted(WITH_OPTIONS), "all"),
                        attrs=synthetic_attrs(geom))
    for name in stored_arrays(root):
        codecs = [c.to_dict()["name"] for c in root[name].metadata.codecs]
        expected = ["vlen-utf8" if ARRAYS[name].dtype == "string" else "bytes", "crc32c"]
        assert codecs == expected, name


def test_root_attribute_table_matches_code():
    from vitreg.cache.attrs import ATTRIBUTES

    section = DOC.split("## Root attributes")[1].split("\n## ")[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            keys, meaning = (cell.strip() for cell in line.strip("|").split("|"))
            rows.append((tuple(re.findall(r"`([a-z0-9_]+)`", keys)), meaning))
    assert rows == [(keys, meaning) for keys, meaning in ATTRIBUTES]


def test_what_completion_writes_is_documented(tmp_path):
    """Schema 1.3: the attributes `mark_complete` adds are in the table, and the
    root zarr.json then holds every array's metadata (consolidated), as the
    section on integrity says."""
    import json

    import numpy as np

    from vitreg.testing import write_store

    geom = Geometry(registers=1, grid=(2, 2), dim=4, depth=1, img_size=28)
    url = write_store(str(tmp_path / "s"), {"norms": np.ones((5, geom.tokens), "f4")},
                      geometry=geom, chunk_rows=2)
    root = json.loads((tmp_path / "s" / "zarr.json").read_text())
    keys = {key for row in doc_table("| key | meaning |") for key in row[0].split("`, `")}
    added = set(root["attributes"]["vitreg"]) - set(synthetic_attrs(geom))
    assert added == {"schema_version", "complete", "failed_rows", "outlier_threshold",
                     "stored_bytes"}
    assert added <= keys
    consolidated = root["consolidated_metadata"]["metadata"]
    assert set(consolidated) >= set(stored_arrays(zarr_open(url)))
    section = DOC.split("## Integrity and consolidated metadata")[1].split("\n## ")[0]
    assert "`crc32c`" in section and "`consolidated_metadata`" in section


def zarr_open(url: str):
    import zarr

    return zarr.open_group(url, mode="r", use_consolidated=False)


def test_the_documented_shards_are_the_code_s():
    """The Chunking section's shard sizes (and the version that brought them)."""
    from vitreg.cache.layout import chunk_rows_for_store, shard_rows_for_store

    section = DOC.split("- **Shards** (1.5)")[1].split("\n- **")[0].replace("\n  ", " ")
    documented = re.findall(r"(ViT-[LS])/14[^:]*: chunks of (\d+) rows, shards of (\d+)", section)
    assert len(documented) == 2
    for name, chunk, shard in documented:
        geom = Geometry(registers=4, grid=(16, 16), dim=1024 if name == "ViT-L" else 384,
                        depth=24, img_size=224)
        rows = chunk_rows_for_store(geom, 1_281_167)
        assert (rows, shard_rows_for_store(geom, 1_281_167, rows)) == (int(chunk), int(shard))
    assert "**1.5**: arrays MAY be sharded" in DOC.split("## Changelog")[1]
