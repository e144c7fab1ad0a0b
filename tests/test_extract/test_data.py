"""Workers read local shards by the byte ranges the plan found, and get exactly
the samples webdataset's stream gives, whatever the tar holds."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import image_samples, write_shard
from tests.test_extract.test_bad_inputs import bad_samples, truncated_tar
from vitreg.extract import data as data_mod
from vitreg.extract.data import ShardStream
from vitreg.extract.plan import plan_shards


def odd_tar(path: Path) -> str:
    """Members webdataset skips or must group: a directory, a `__meta__` file,
    a PAX long name, two members of one key in a row, a key split by another."""

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "a.jpg", b"A1")
        add(tar, "a.cls", b"1")
        folder = tarfile.TarInfo("folder.jpg")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        add(tar, "__meta__", b"skip me")
        add(tar, "__info__/x.txt", b"skip me too")
        add(tar, "dir/" + "long" * 40 + ".jpg", b"L")
        add(tar, "b.jpg", b"B1")
        add(tar, "b.jpg", b"B2")  # a second b.jpg starts a new sample with the same key
        add(tar, "c.json", b"{}")
        add(tar, "a.txt", b"a again")
    return str(path)


def mixed_shards(tmp_path: Path) -> list[str]:
    """A good shard, one of bad images, a cut one, an odd one and a missing one."""
    rng = np.random.default_rng(42)
    return [
        write_shard(tmp_path / "good.tar", image_samples(9, start=0)),
        write_shard(tmp_path / "bad.tar", [s for s, _ in bad_samples(rng)]),
        truncated_tar(tmp_path / "cut.tar", image_samples(4, start=20)),
        odd_tar(tmp_path / "odd.tar"),
        str(tmp_path / "missing.tar"),
    ]


def owned(stream: ShardStream, worker: int, workers: int, monkeypatch) -> list:
    monkeypatch.setattr(
        data_mod, "get_worker_info", lambda: SimpleNamespace(id=worker, num_workers=workers)
    )
    return [(row, sample) for row, sample in stream._owned()]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_byte_ranges_give_the_streamed_samples(tmp_path, monkeypatch, workers):
    shards = mixed_shards(tmp_path)
    plan = plan_shards(shards)
    assert [s is not None for s in plan.layouts] == [True, True, True, True, False]
    todo = np.ones(plan.n_rows, dtype=bool)
    todo[[2, 11]] = False
    args = dict(
        offsets=plan.offsets,
        todo=todo,
        batch_size=2,
        transform=None,
        img_size=8,
        duplicates=plan.duplicates,
    )
    for worker in range(workers):
        by_span = owned(
            ShardStream(plan.urls, layouts=plan.layouts, **args), worker, workers, monkeypatch
        )
        streamed = owned(ShardStream(plan.urls, **args), worker, workers, monkeypatch)
        assert [r for r, _ in by_span] == [r for r, _ in streamed]
        assert [s for _, s in by_span] == [s for _, s in streamed]
        assert all((r // 2) % workers == worker and todo[r] for r, _ in by_span)


def test_odd_tar_groups_like_webdataset(tmp_path, monkeypatch):
    plan = plan_shards([odd_tar(tmp_path / "odd.tar")])
    samples = owned(
        ShardStream(
            plan.urls,
            layouts=plan.layouts,
            offsets=plan.offsets,
            todo=np.ones(plan.n_rows, bool),
            batch_size=4,
            transform=None,
            img_size=8,
        ),
        0,
        1,
        monkeypatch,
    )
    got = [{k: v for k, v in s.items() if k != "__url__"} for _, s in samples]
    assert got == [
        {"__key__": "a", "jpg": b"A1", "cls": b"1"},
        {"__key__": "dir/" + "long" * 40, "jpg": b"L"},
        {"__key__": "b", "jpg": b"B1"},
        {"__key__": "b", "jpg": b"B2"},
        {"__key__": "c", "json": b"{}"},
        {"__key__": "a", "txt": b"a again"},
    ]
    assert plan.duplicates == {3: 2, 5: 0}


def test_decode_threads_give_the_same_batches(tmp_path):
    rng = np.random.default_rng(42)
    shards = [
        write_shard(tmp_path / "good.tar", image_samples(9, start=0)),
        write_shard(tmp_path / "bad.tar", [s for s, _ in bad_samples(rng)]),
    ]
    plan = plan_shards(shards)
    from vitreg.extract.transforms import eval_transform

    transform = eval_transform(
        {
            "input_size": (3, 32, 32),
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "crop_mode": "center",
        }
    )

    def batches(threads: int) -> list[dict]:
        return list(
            ShardStream(
                plan.urls,
                offsets=plan.offsets,
                todo=np.ones(plan.n_rows, bool),
                batch_size=4,
                transform=transform,
                img_size=32,
                duplicates=plan.duplicates,
                layouts=plan.layouts,
                decode_threads=threads,
            )
        )

    one, three = batches(1), batches(3)
    assert len(one) == len(three) == 5
    for a, b in zip(one, three):
        assert a["key"] == b["key"] and a["error"] == b["error"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    errors = [e for b in one for e in b["error"]]
    assert sum(e.startswith("decode:") for e in errors) == 3 and any(
        e.startswith("duplicate") for e in errors
    )
    assert bool(one[0]["image"].float().std() > 0)


def test_planning_in_processes_gives_the_serial_plan(tmp_path, monkeypatch):
    from vitreg.core.errors import InputError
    from vitreg.extract import plan as plan_mod

    shards = mixed_shards(tmp_path)
    monkeypatch.setattr(plan_mod, "planning_processes", lambda: 1)
    serial = plan_shards(shards)
    monkeypatch.setattr(plan_mod, "planning_processes", lambda: 3)
    forked = plan_shards(shards)
    assert forked.keys() == serial.keys() and forked.duplicates == serial.duplicates
    assert forked.digests() == serial.digests() and forked.damaged() == serial.damaged()
    for a, b in zip(forked.layouts, serial.layouts):
        assert (a is None) == (b is None)
        if a is not None:
            for field in ("first", "offset", "size", "ext"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert a.exts == b.exts
    # an error in a child is the parent's error, with its message
    merged = write_shard(tmp_path / "merged.tar", [
        {"__key__": "img", "v1.jpg": b"1", "v2.jpg": b"2"}])
    with pytest.raises(InputError, match="several images under one key"):
        plan_shards([shards[0], merged])


def test_ranks_of_a_node_share_its_cores_for_planning(monkeypatch):
    from vitreg.extract import plan as plan_mod

    monkeypatch.setattr(plan_mod, "usable_cores", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert plan_mod.planning_processes() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert plan_mod.planning_processes() == 1
