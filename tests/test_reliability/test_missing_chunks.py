"""A complete store never reads a missing or truncated chunk as zeros: every
reader (memory maps, zarr, xarray, HTTP, S3) stops with a sentence that names
the chunk and says to run `vitreg verify`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.servers import static_server
from vitreg.cache import Geometry, open_store
from vitreg.cache.errors import MissingChunkError
from vitreg.cli import cli
from vitreg.testing import write_planted_store, write_store

GEOM = Geometry(registers=1, grid=(2, 2), dim=8, depth=1, img_size=16)
N, CHUNK = 40, 8
SAYS = "`vitreg verify"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A complete planted store (tokens, norms, labels), five chunks per array."""
    path = tmp_path_factory.mktemp("pristine") / "store.zarr"
    write_planted_store(str(path), n_images=N, geometry=GEOM, seed=0, chunk_rows=CHUNK,
                        with_pixels=False)
    return path


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    target = tmp_path / "served" / "store.zarr"
    shutil.copytree(pristine, target)
    return target


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], terminal_width=400)


def assert_names_chunk(result, chunk: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    text = " ".join(result.output.split())  # click wraps nothing, but be safe
    assert chunk in text and "missing from a complete store" in text and SAYS in text, text
    assert "Traceback" not in result.output


COMMANDS = {
    "analysis norms": ["analysis", "norms", "{store}", "--out", "{out}", "--images", "0"],
    "probe position": ["probe", "position", "{store}", "--out", "{out}/r.json", "--epochs", "1",
                       "--normals", "8",
                       "--quiet"],
}


@pytest.mark.parametrize("array, command", [
    ("norms", "analysis norms"), ("tokens", "probe position"), ("norms", "probe position"),
])
def test_a_deleted_chunk_fails_the_command_with_a_sentence(copy, tmp_path, array, command):
    (copy / array / "c" / "2" / ("0" if array == "norms" else "0/0")).unlink()
    result = invoke(*[a.format(store=copy, out=tmp_path / "out") for a in COMMANDS[command]])
    assert_names_chunk(result, f"{array}/c/2/0")


def test_every_reader_of_a_store_with_a_deleted_chunk_refuses(copy):
    (copy / "norms" / "c" / "3" / "0").unlink()
    (copy / "label" / "c" / "1").unlink()
    store = open_store(str(copy))
    for read in (lambda: store.reader("norms")[0:40],  # memory map
                 lambda: store.array("norms")[:],  # zarr
                 lambda: store.take("norms", np.array([25])),
                 lambda: store.array("label")[:],
                 lambda: store.to_xarray()["norms"].values,
                 lambda: open_store(str(copy), verify=True).reader("norms")[20:30]):
        with pytest.raises(MissingChunkError, match=SAYS):
            read()
    np.testing.assert_array_equal(store.reader("norms")[0:24].shape, (24, GEOM.tokens))


def test_verify_still_lists_the_missing_chunks(copy):
    (copy / "norms" / "c" / "3" / "0").unlink()
    result = invoke("verify", copy)
    assert result.exit_code == 1 and "norms/c/3/0: missing" in result.output


def test_a_truncated_chunk_is_refused_by_size_before_decoding(copy):
    for name in ("norms/c/1/0", "tokens/c/1/0/0"):
        path = copy / name
        path.write_bytes(path.read_bytes()[:-10])
    store = open_store(str(copy))
    with pytest.raises(MissingChunkError, match=r"norms/c/1/0 is \d+ bytes, expected \d+"):
        store.array("norms")[8:9]
    with pytest.raises(MissingChunkError, match=r"tokens/c/1/0/0 is \d+ bytes, expected"):
        store.reader("tokens")[8:9]


def test_a_404_over_http_fails_like_a_deleted_file(copy, tmp_path):
    (copy / "norms" / "c" / "2" / "0").unlink()
    with static_server(copy.parent) as (base, _):
        url = f"{base}/store.zarr"
        result = invoke("analysis", "norms", url, "--out", tmp_path / "out", "--images", "0")
        assert_names_chunk(result, "norms/c/2/0")
        with pytest.raises(MissingChunkError, match=SAYS):
            open_store(url).array("norms")[:]
        assert open_store(url).array("norms")[:16].shape == (16, GEOM.tokens)


def test_an_incomplete_store_still_reads_its_unwritten_chunks_as_pending(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"), {"norms": np.ones((N, GEOM.tokens), np.float32)},
                      geometry=GEOM, chunk_rows=CHUNK, complete=False)
    (Path(url) / "norms" / "c" / "4" / "0").unlink()
    got = open_store(url, allow_partial=True).reader("norms")[30:40]
    assert got[:2].all() and not got[2:].any()


def test_a_sharded_store_refuses_a_missing_shard_and_an_emptied_index_entry(tmp_path):
    norms = np.arange(N * GEOM.tokens, dtype=np.float32).reshape(N, GEOM.tokens)
    url = write_store(str(tmp_path / "s.zarr"), {"norms": norms, "tokens": np.ones(
        (N, GEOM.tokens, GEOM.dim), np.float16)}, geometry=GEOM, chunk_rows=4, shard_rows=16)
    shard = Path(url, "norms", "c", "1", "0")
    data = bytearray(shard.read_bytes())
    index_at = len(data) - (16 * 4 + 4)
    data[index_at + 16: index_at + 32] = b"\xff" * 16  # inner chunk 1: "not stored"
    shard.write_bytes(bytes(data))
    (Path(url) / "tokens" / "c" / "2" / "0" / "0").unlink()
    store = open_store(url)
    with pytest.raises(MissingChunkError, match=r"norms/c/1/0 \(its chunk 1\) is missing"):
        store.array("norms")[20:21]
    with pytest.raises(MissingChunkError, match=r"norms/c/1/0 \(its chunk 1\) is missing"):
        store.reader("norms")[20:21]
    with pytest.raises(MissingChunkError, match="tokens/c/2/0/0 is missing"):
        store.reader("tokens")[35:36]
    with pytest.raises(MissingChunkError, match="tokens/c/2/0/0 is missing"):
        store.array("tokens")[35:36]
    np.testing.assert_array_equal(store.array("norms")[:16], norms[:16])
    np.testing.assert_array_equal(store.array("norms")[32:], norms[32:])  # last shard: 2 of 4


def test_a_chunk_missing_from_s3_fails_like_a_deleted_file(copy, monkeypatch):
    import s3fs

    from tests.servers import s3_server, upload_folder

    s3fs.S3FileSystem.clear_instance_cache()  # one made for another test's server
    (copy / "norms" / "c" / "2" / "0").unlink()
    with s3_server() as endpoint:
        for name, value in [("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")]:
            monkeypatch.setenv(name, value)
        # moto's buckets live as long as the process: a name no other test uses
        upload_folder(endpoint, copy, "damaged-copy", "store.zarr")
        store = open_store("s3://damaged-copy/store.zarr")
        with pytest.raises(MissingChunkError, match=r"norms/c/2/0 is missing.*`vitreg verify"):
            store.array("norms")[:]
        assert store.array("norms")[:16].shape == (16, GEOM.tokens)


@pytest.mark.parametrize("fault", ["500", "length"])
@pytest.mark.parametrize("path", ["store.zarr/norms/c/1/0", "store.zarr/zarr.json"])
def test_a_failing_server_ends_in_a_sentence_not_a_traceback(copy, tmp_path, fault, path):
    with static_server(copy.parent, faults={path: fault}) as (base, _):
        for args in (["info", f"{base}/store.zarr"],
                     ["analysis", "norms", f"{base}/store.zarr", "--out", tmp_path / "o",
                      "--images", "0"]):
            result = invoke(*args)
            reads_it = path.endswith("zarr.json") or args[0] == "analysis"  # info reads no norms
            assert result.exit_code == (2 if reads_it else 0), (result.output, result.exception)
            assert "Traceback" not in result.output
            if path.endswith("c/1/0") and args[0] == "analysis":
                assert f"cannot read {path.removeprefix('store.zarr/')}" in result.output
                assert ("500" if fault == "500" else "Payload") in result.output
