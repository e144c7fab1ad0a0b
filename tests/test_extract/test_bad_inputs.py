"""Every kind of bad input is recorded against its key, and nothing else moves."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import encode, image_samples, make_image, write_shard
from vitreg.cache import open_store
from vitreg.extract.run import run_extract


def bad_samples(rng: np.random.Generator) -> list[tuple[dict, str]]:
    """(sample, expected error prefix or "" for success)."""
    img = make_image(rng, 64, 80)
    jpeg = encode(img)
    return [
        ({"__key__": "truncated", "jpg": jpeg[: len(jpeg) // 2], "cls": b"0"}, "decode: OSError"),
        (
            {"__key__": "noise", "jpg": rng.bytes(3000), "cls": b"1"},
            "decode: UnidentifiedImageError",
        ),
        ({"__key__": "cmyk", "jpg": encode(img.convert("CMYK")), "cls": b"2"}, ""),
        ({"__key__": "gray", "jpg": encode(img.convert("L")), "cls": b"0"}, ""),
        ({"__key__": "tiny", "jpg": encode(make_image(rng, 16, 16)), "cls": b"1"}, ""),
        ({"__key__": "png_as_jpg", "jpg": encode(img, "PNG"), "cls": b"2"}, ""),
        (
            {"__key__": "no_image", "cls": b"0", "json": b"{}"},
            "decode: ValueError: no image member",
        ),
        ({"__key__": "no_cls", "jpg": jpeg}, ""),
        ({"__key__": "gray", "jpg": jpeg, "cls": b"1"}, "duplicate key"),
    ]


def truncated_tar(path: Path, samples: list[dict]) -> str:
    """The tar of `samples`, cut in the middle of the last sample's image."""
    full = write_shard(path.with_suffix(".full"), samples)
    with tarfile.open(full) as tar:
        last_image = [m for m in tar.getmembers() if m.name.endswith(".jpg")][-1]
    data = Path(full).read_bytes()
    path.write_bytes(data[: last_image.offset_data + last_image.size // 2])
    return str(path)


def test_bad_inputs_are_recorded_and_the_rest_is_unchanged(tmp_path):
    rng = np.random.default_rng(42)
    cases = bad_samples(rng)
    good = image_samples(5, start=50)
    first = write_shard(tmp_path / "a.tar", [good[0], *[s for s, _ in cases], good[1]])
    cut = truncated_tar(tmp_path / "b.tar", good[2:5])
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    shards = [first, str(tmp_path / "missing.tar"), cut, str(tmp_path / "empty.tar")]
    summary = run_extract(
        shards=shards,
        model="tiny_dino",
        out=str(tmp_path / "s"),
        weights="random",
        batch_size=4,
        progress=False,
    )
    store = open_store(str(tmp_path / "s"))
    keys = list(store.array("key")[:])
    status, errors = store.array("status")[:], store.array("error")[:]
    kept_from_cut = len(keys) - 2 - len(cases)
    assert kept_from_cut == 2  # the samples before the cut are kept
    assert keys[: len(cases) + 2] == [
        "sample00050",
        *[s["__key__"] for s, _ in cases],
        "sample00051",
    ]
    for i, (sample, expected) in enumerate(cases, start=1):
        if expected:
            assert status[i] == 2 and errors[i].startswith(expected), (sample["__key__"], errors[i])
        else:
            assert status[i] == 1 and errors[i] == "", (sample["__key__"], errors[i])
    assert store.array("label")[keys.index("no_cls")] == -1
    assert summary.ok + summary.failed == len(keys)
    damaged = {Path(d["url"]).name: d["reason"] for d in summary.damaged_shards}
    assert set(damaged) == {"missing.tar", "b.tar"}
    # Good rows hold exactly what a clean run over them gives.
    clean = write_shard(tmp_path / "clean.tar", [good[0], good[1], *good[2 : 2 + kept_from_cut]])
    run_extract(
        shards=[clean],
        model="tiny_dino",
        out=str(tmp_path / "c"),
        weights="random",
        batch_size=4,
        progress=False,
    )
    reference = open_store(str(tmp_path / "c")).array("tokens")[:]
    rows = [0, len(cases) + 1, *range(len(cases) + 2, len(keys))]
    np.testing.assert_array_equal(store.array("tokens")[rows], reference)


def test_strict_exits_nonzero_after_the_summary(tmp_path):
    from vitreg.cli import cli

    shard = write_shard(tmp_path / "a.tar", [*image_samples(2), {"__key__": "x", "jpg": b"junk"}])
    args = [
        "extract",
        shard,
        "--model",
        "tiny_dino",
        "--weights",
        "random",
        "--no-progress",
        "--out",
        str(tmp_path / "s"),
    ]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, [*args, "--strict"])
    assert result.exit_code == 1
    assert "2 ok, 1 failed" in result.output
