"""--keys FILE: only the listed samples, rows in the file's order (the study's subset)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401  (registers the tiny families)
from vitreg.cache import ConfigMismatchError, open_store
from vitreg.cli import cli
from vitreg.core import InputError
from vitreg.extract.run import run_extract

#: Across both shards of the `shards` fixture (00000-00006, 00007-00012), out of tar order.
LISTED = ["sample00011", "sample00002", "sample00009", "sample00000", "sample00006"]


def keys_file(tmp_path, keys, name="keys.txt") -> str:
    path = tmp_path / name
    path.write_text("\n".join(keys) + "\n\n")
    return str(path)


def extract(shards, out, **kwargs):
    return run_extract(
        shards=shards,
        out=str(out),
        model="tiny_dino",
        weights="random",
        batch_size=2,
        progress=False,
        with_options=["pixels"],
        **kwargs,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_keys_keep_only_the_listed_samples_in_file_order(tmp_path, shards, workers):
    extract(shards, tmp_path / "full")
    summary = extract(
        shards, tmp_path / "subset", keys_file=keys_file(tmp_path, LISTED), workers=workers
    )
    full, subset = open_store(str(tmp_path / "full")), open_store(str(tmp_path / "subset"))
    assert list(subset.array("key")[:]) == LISTED
    assert (summary.rows, summary.ok) == (len(LISTED), len(LISTED))
    rows = [list(full.array("key")[:]).index(k) for k in LISTED]
    for name in ("label", "pixels", "norms", "tokens", "pooled/cls"):
        np.testing.assert_array_equal(
            subset.array(name)[:], full.array(name)[:][rows], err_msg=name
        )
    assert subset.meta["keys_file"]["sha256"]


def test_keys_resume_and_refuse_another_list(tmp_path, shards):
    keys = keys_file(tmp_path, LISTED)
    extract(shards, tmp_path / "s", keys_file=keys)
    assert extract(shards, tmp_path / "s", keys_file=keys).processed == 0
    with pytest.raises(ConfigMismatchError, match="keys_file"):
        extract(shards, tmp_path / "s", keys_file=keys_file(tmp_path, LISTED[::-1], "other.txt"))


def test_missing_keys_are_listed(tmp_path, shards):
    keys = keys_file(tmp_path, ["sample00001", "nope-1", "sample00003", "nope-2"])
    with pytest.raises(InputError, match="2 of the 4 keys .* no shard: nope-1, nope-2"):
        extract(shards, tmp_path / "s", keys_file=keys)
    assert not (tmp_path / "s").exists()
    result = CliRunner().invoke(
        cli,
        [
            "extract",
            *shards,
            "--model",
            "tiny_dino",
            "--weights",
            "random",
            "--keys",
            keys,
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code != 0 and "nope-1, nope-2" in result.output


def test_a_key_listed_twice_is_refused(tmp_path, shards):
    with pytest.raises(InputError, match="more than once"):
        extract(shards, tmp_path / "s", keys_file=keys_file(tmp_path, ["sample00001"] * 2))


def test_keys_need_local_shards(tmp_path, shards):
    from vitreg.core import UsageError

    with pytest.raises(UsageError, match="local shard files"):
        listed = keys_file(tmp_path, LISTED[:1])
        extract([f"pipe:cat {shards[0]}"], tmp_path / "s", keys_file=listed)
