"""A store served as it is, by a static web server that lists nothing and by an
S3 server (both on the loopback), reads like the local copy: every reading
command gives the same results, and reads only the arrays it needs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from tests.servers import s3_server, static_server, upload_folder
from vitreg.analysis import run_norms
from vitreg.cache import StoreFormatError, open_store
from vitreg.cli import cli
from vitreg.extract.run import run_extract

#: Each reading command with its arguments; `{out}` is a fresh folder or file.
COMMANDS = {
    "info": ["info", "{store}"],
    "verify": ["verify", "{store}"],
    "analysis norms": ["analysis", "norms", "{store}", "--out", "{out}", "--images", "0"],
    "analysis similarity": ["analysis", "similarity", "{store}", "--out", "{out}"],
    "analysis maps": ["analysis", "maps", "{store}", "--out", "{out}"],
    "probe classify": ["probe", "classify", "{store}", "--out", "{out}/r.json", "--epochs", "2",
                       "--quiet"],
    "probe position": ["probe", "position", "{store}", "--out", "{out}/r.json", "--epochs", "2",
                       "--quiet"],
}


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """A complete store written by `vitreg extract` (tiny model, 24 images)."""
    folder = tmp_path_factory.mktemp("served")
    shard = write_shard(folder / "s.tar", image_samples(24, classes=3))
    store = folder / "store.zarr"
    run_extract(shards=[shard], model="tiny_dinov2_reg4", out=str(store), weights="random",
                with_options=["pixels"], batch_size=8, progress=False)
    return store


@pytest.fixture(scope="module")
def http(local):
    with static_server(local.parent) as (base, sent):
        yield f"{base}/store.zarr", sent


@pytest.fixture(scope="module")
def s3(local):
    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name, value in [("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")]:
            mp.setenv(name, value)
        upload_folder(endpoint, local, "shared", "stores/store.zarr")
        yield "s3://shared/stores/store.zarr"


def run_command(name: str, store: str, out: Path) -> tuple[str, dict[str, str]]:
    """The command's output (the store's URL replaced) and the JSON files it wrote."""
    out.mkdir(parents=True)
    args = [a.format(store=store, out=out) for a in COMMANDS[name]]
    result = CliRunner().invoke(cli, args, terminal_width=200)
    assert result.exit_code == 0, (name, store, result.output, result.exception)
    written = {p.name: untimed(json.loads(p.read_text().replace(store, "STORE")
                                          .replace(str(out), "OUT")))
               for p in sorted(out.rglob("*.json"))}
    text = result.output.replace(store, "STORE").replace(str(out), "OUT")
    text = re.sub(r"\b\d+:\d\d(:\d\d)?\b", "H:MM", text)  # progress's elapsed times
    text = re.sub(r"[0-9.,]+\s*(img|step)/s\b", "N/s", text)  # progress's rates
    text = re.sub(r"[0-9.]+\s*s\b", "Ns", text)  # rich wraps anywhere: "13.5 \ns" too
    return re.sub(r"\s+", "", text), written


def untimed(value):
    """`value` without the wall-clock times a result records."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items()
                if k not in ("seconds", "elapsed_s", "started_at")}
    return [untimed(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("where", ["http", "s3"])
def test_each_reading_command_gives_the_local_results(local, http, s3, tmp_path, command, where):
    remote = http[0] if where == "http" else s3
    expected = run_command(command, str(local), tmp_path / "local")
    got = run_command(command, remote, tmp_path / "remote")
    assert got[1] == expected[1]
    assert "".join(got[0].split()) == "".join(expected[0].split())  # lines rewrap


def test_the_static_server_lists_nothing(http):
    import fsspec

    base, _ = http
    with pytest.raises(FileNotFoundError):
        fsspec.filesystem("http").ls(base + "/tokens/")


def test_remote_norms_reads_no_token_bytes(http, tmp_path):
    url, sent = http
    sent.clear()
    run_norms([url], out=tmp_path / "out", images=0)
    fetched = {path: n for path, n in sent.items() if n}
    assert sum(n for p, n in fetched.items() if p.startswith("store.zarr/tokens/")) == 0
    assert sum(n for p, n in fetched.items() if p.startswith("store.zarr/norms/c/")) > 0
    # one zarr.json holds every array's metadata: no other metadata file is fetched
    assert [p for p in fetched if p.endswith("zarr.json")] == ["store.zarr/zarr.json"]


def test_remote_reads_equal_local_reads(local, http, s3):
    here = open_store(str(local))
    for url in (http[0], s3):
        there = open_store(url, verify=True)
        for name in ("tokens", "norms", "pooled/cls", "pixels"):
            np.testing.assert_array_equal(there.reader(name)[3:20], here.reader(name)[3:20])
        assert there.meta == here.meta
        np.testing.assert_array_equal(there.to_xarray()["pooled/cls"].values,
                                      here.to_xarray()["pooled/cls"].values)


def test_a_flipped_byte_served_over_http_is_named(local, tmp_path):
    copy = tmp_path / "copy" / "store.zarr"
    shutil.copytree(local, copy)
    chunk = copy / "norms" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0x01
    chunk.write_bytes(bytes(data))
    with static_server(copy.parent) as (base, _):
        result = CliRunner().invoke(cli, ["verify", f"{base}/store.zarr"])
        assert result.exit_code == 1
        assert "norms/c/0/0: altered" in result.output
        with pytest.raises(Exception, match="norms") as raised:
            open_store(f"{base}/store.zarr", verify=True).reader("norms")[:]
        assert "VitregError" in [c.__name__ for c in type(raised.value).__mro__]


def test_a_zip_is_read_over_http_in_place(local, tmp_path):
    """`vitreg pack` output served as one file: read with range requests."""
    zipped = tmp_path / "zips" / "store.zip"
    zipped.parent.mkdir()
    assert CliRunner().invoke(cli, ["pack", str(local), str(zipped)]).exit_code == 0
    with static_server(zipped.parent) as (base, sent):
        url = f"{base}/store.zip"
        there = open_store(url)
        np.testing.assert_array_equal(there.reader("norms")[:],
                                      open_store(str(local)).reader("norms")[:])
        result = CliRunner().invoke(cli, ["verify", url])
        assert result.exit_code == 0, result.output
        assert sent["store.zip"] < zipped.stat().st_size * 3  # ranges, not the file again and again
    assert json.loads(Path(local, "zarr.json").read_text())["consolidated_metadata"]


def test_a_store_without_consolidated_metadata_on_a_static_server_says_why(local, tmp_path):
    """Stores of schema 1.0-1.2 carry none: a server that lists nothing cannot serve them."""
    copy = tmp_path / "old" / "store.zarr"
    shutil.copytree(local, copy)
    root = json.loads((copy / "zarr.json").read_text())
    root.pop("consolidated_metadata")
    (copy / "zarr.json").write_text(json.dumps(root))
    with static_server(copy.parent) as (base, _):
        with pytest.raises(StoreFormatError, match="no consolidated metadata"):
            open_store(f"{base}/store.zarr")
        zarr.consolidate_metadata(str(copy))  # what the message tells the owner to do
        assert open_store(f"{base}/store.zarr").counts() == open_store(str(local)).counts()
