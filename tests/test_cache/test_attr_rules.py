"""A store's root attributes are checked by type and range when it opens, and
whatever a store holds is printed as plain text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.store_edit import edit_array_meta
from vitreg.cache import Geometry, StoreFormatError, UnsafeStoreError, open_store
from vitreg.cli import cli
from vitreg.testing import write_store

GEOM = Geometry(registers=0, grid=(2, 2), dim=4, depth=1, img_size=28)


@pytest.fixture
def store(tmp_path) -> Path:
    url = write_store(str(tmp_path / "s.zarr"), {"norms": np.ones((6, 5), np.float32)},
                      geometry=GEOM, chunk_rows=4, n_rows=6)
    return Path(url)


def set_attr(store: Path, key: str, value) -> None:
    """Change one root attribute in place, as a careless or hostile editor would."""
    path = store / "zarr.json"
    meta = json.loads(path.read_text())
    meta["attributes"]["vitreg"][key] = value
    path.write_text(json.dumps(meta, allow_nan=True))


BAD = [
    ("complete", "false", "'complete' is 'false' (str), expected true or false"),
    ("complete", 1, "'complete' is 1 (int), expected true or false"),
    ("complete", None, "'complete' is None"),
    ("n_rows", -1, "'n_rows' is -1 (int), expected an integer from 1 to 1000000000"),
    ("n_rows", 10**13, "'n_rows' is 10000000000000"),
    ("n_rows", "6", "'n_rows' is '6' (str)"),
    ("img_size", 1.5, "'img_size' is 1.5 (float)"),
    ("img_size", True, "'img_size' is True (bool)"),
    ("grid", [0, 2], "'grid' is [0, 2]"),
    ("grid", [10**6, 10**6], "expected two integers from 1 to 4096"),
    ("registers", -1, "'registers' is -1"),
    ("registers", 10**9, "'registers' is 1000000000"),
    ("embed_dim", 0, "'embed_dim' is 0"),
    ("depth", 10**7, "'depth' is 10000000"),
    ("seed", -5, "'seed' is -5"),
    ("schema_version", 1.5, "'schema_version' is 1.5 (float)"),
    ("shards", [{"url": 3, "samples": 1}], "'shards' is"),
    ("shards", [{"url": "a.tar", "samples": -1}], "samples: integer >= 0"),
    ("outlier_threshold", {"percentile": 98.0, "value": "abc"}, "'outlier_threshold' is"),
    ("outlier_threshold", {"percentile": 98.0, "value": float("nan")}, "'outlier_threshold'"),
    ("outlier_threshold", {"percentile": 980, "value": 1.0}, "percentile: a number in (0, 100]"),
    ("failed_rows", [-1], "'failed_rows' is [-1]"),
    ("failed_rows", [6], "'failed_rows' names a row past 'n_rows'"),
    ("failed_rows", ["1"], "'failed_rows' is ['1']"),
    ("stored_bytes", {"norms": -5}, "'stored_bytes' is"),
    ("planted", {"strength": float("inf")}, "'planted.strength' holds NaN or an infinite"),
    ("model", "x" * 5000, "'model' is 'xxxx"),
]


@pytest.mark.parametrize("key, value, words", BAD, ids=[f"{k}={v!r:.20}" for k, v, _ in BAD])
def test_a_malformed_attribute_is_refused_with_what_it_must_be(store, key, value, words):
    set_attr(store, key, value)
    with pytest.raises(StoreFormatError) as raised:
        open_store(str(store), allow_partial=True)
    assert words in str(raised.value)
    result = CliRunner().invoke(cli, ["info", str(store)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "malformed" in result.output or "past" in result.output


def test_the_string_false_never_counts_as_complete(store):
    set_attr(store, "complete", "false")
    with pytest.raises(StoreFormatError, match="true or false"):
        open_store(str(store))


@pytest.mark.parametrize("array, change, words", [
    ("status", lambda m: m.update(shape=[10**13]), "more than 1,000,000,000 rows"),
    ("norms", lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[2**28, 5]),
     "chunks of 5,368,709,120 bytes"),
])
def test_shapes_and_chunks_no_store_has_are_refused_before_any_read(store, array, change, words):
    edit_array_meta(str(store), array, change)
    with pytest.raises(UnsafeStoreError, match=words):
        open_store(str(store))


INJECTED = "[link=http://evil.example]click[/link][bold red]\x1b[2J\x1b]8;;http://evil\x07x\r"


def test_info_prints_store_text_plainly(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"), {
        "norms": np.ones((3, 5), np.float32),
        "status": np.array([1, 2, 1], np.uint8),
        "error": np.array(["", "[red]boom[/red] \x1b[31mred", ""], dtype=object),
    }, geometry=GEOM, chunk_rows=4, model=INJECTED, weights="[blink]w[/blink]")
    result = CliRunner().invoke(cli, ["info", url], terminal_width=300)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "[link=http://evil.example]click[/link]" in out  # shown, not interpreted
    assert "\\x1b[2J" in out and "\\x1b]8;;http://evil\\x07x\\x0d" in out
    assert "[blink]w[/blink]" in out
    assert "[red]boom[/red] \\x1b[31mred" in out


def test_errors_show_store_text_plainly(store):
    set_attr(store, "token_mode", "\x1b]8;;http://evil\x07[bold]x")
    result = CliRunner().invoke(cli, ["info", str(store)])
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\\x1b]8;;http://evil\\x07[bold]x" in result.output
