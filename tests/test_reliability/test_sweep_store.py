"""The store side of issue #23's sweep: hostile and careless stores, each
tried with a reading command, each answered with an exit status and one
sentence (never a traceback, never zeros read for a missing chunk)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numcodecs
import pytest
from click.testing import CliRunner

from tests.servers import static_server
from tests.store_edit import edit_array_meta
from vitreg.cache import Geometry
from vitreg.cache.pack import run_pack
from vitreg.cli import cli
from vitreg.testing import write_planted_store

GEOM = Geometry(registers=1, grid=(4, 4), dim=8, depth=1, img_size=32)
MISSING = "missing from a complete store"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "store.zarr"
    write_planted_store(str(path), n_images=48, geometry=GEOM, seed=0, chunk_rows=8,
                        with_pixels=False)
    return path


# -- damages: each takes the store folder (a copy) and returns the URL to open ------------------

def root_meta(change: Callable[[dict], object]) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        path = store / "zarr.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta, allow_nan=True))
        return str(store)
    return damage


def attr(key: str, value) -> Callable[[Path], str]:
    return root_meta(lambda m: m["attributes"]["vitreg"].__setitem__(key, value))


def write(name: str, data: bytes) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        (store / name).write_bytes(data)
        return str(store)
    return damage


def delete(name: str) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        (store / name).unlink()
        return str(store)
    return damage


def truncate(name: str, keep: int) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        path = store / name
        path.write_bytes(path.read_bytes()[:keep])
        return str(store)
    return damage


def extend(name: str) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        path = store / name
        path.write_bytes(path.read_bytes() + b"\0" * 64)
        return str(store)
    return damage


def into_folder(name: str) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        (store / name).unlink()
        (store / name).mkdir()
        return str(store)
    return damage


def link(name: str, target: str | None) -> Callable[[Path], str]:
    """Replace `name` by a link to `target` (outside the store), or to itself (a loop)."""
    def damage(store: Path) -> str:
        path = store / name
        if target is None:
            path.unlink() if path.is_file() else None
            path.symlink_to(path.name)  # a link to itself
        else:
            outside = store.parent / target
            outside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(outside))
            path.symlink_to(outside, target_is_directory=outside.is_dir())
        return str(store)
    return damage


def array_meta(array: str, change: Callable[[dict], object]) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        edit_array_meta(str(store), array, change)
        return str(store)
    return damage


def forget_array(name: str) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        shutil.rmtree(store / name)
        root_meta(lambda m: m["consolidated_metadata"]["metadata"].pop(name))(store)
        return str(store)
    return damage


def gzip_bomb(store: Path) -> str:
    """`norms` recompressed with gzip (on the allow-list); one chunk a bomb."""
    array_meta("norms", lambda m: m.update(codecs=[
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "gzip", "configuration": {"level": 1}}, {"name": "crc32c"}]))(store)
    payload = numcodecs.GZip(level=1).encode(b"\0" * 64 * 2**20)
    for chunk in (store / "norms" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(payload + google_crc32c.value(payload).to_bytes(4, "little"))
    return str(store)


def packed(change: Callable[[zipfile.ZipInfo, bytes], tuple[bytes, int]] | None = None,
           raw: Callable[[bytes], bytes] | None = None) -> Callable[[Path], str]:
    """The store packed into a zip; members rewritten by `change`, or its bytes by `raw`."""
    def damage(store: Path) -> str:
        zipped = store.parent / "store.zip"
        run_pack(str(store), str(zipped))
        if change is not None:
            edited = store.parent / "edited.zip"
            with zipfile.ZipFile(zipped) as src, zipfile.ZipFile(edited, "w") as dst:
                for info in src.infolist():
                    data, how = change(info, src.read(info))
                    dst.writestr(info.filename, data, compress_type=how)
            os.replace(edited, zipped)
        if raw is not None:
            zipped.write_bytes(raw(zipped.read_bytes()))
        return str(zipped)
    return damage


def deflate_norms(info: zipfile.ZipInfo, data: bytes) -> tuple[bytes, int]:
    if info.filename == "norms/c/0/0":
        return b"\0" * 32 * 2**20, zipfile.ZIP_DEFLATED
    return data, zipfile.ZIP_STORED


def not_a_store(kind: str) -> Callable[[Path], str]:
    def damage(store: Path) -> str:
        if kind == "file":
            (store.parent / "file.zarr").write_text("hello")
            return str(store.parent / "file.zarr")
        if kind == "empty":
            (store.parent / "empty.zarr").mkdir()
            return str(store.parent / "empty.zarr")
        return {"scheme": "nosuchscheme://host/store.zarr", "port": "http://127.0.0.1:9/s.zarr",
                "v2": str(store)}[kind]
    return damage


def shard_points_past_end(store: Path) -> str:
    """A sharded copy would be needed; instead an unsharded chunk grown a shard index."""
    return extend("tokens/c/2/0/0")(store)


NORMS = ["analysis", "norms", "{url}", "--out", "{out}", "--images", "0"]
PROBE = ["probe", "position", "{url}", "--out", "{out}/r.json", "--epochs", "1", "--normals", "8"]
INFO, VERIFY, PACK = ["info", "{url}"], ["verify", "{url}"], ["pack", "{url}", "{out}.zip"]

#: (case, damage, command, exit status, words the output must hold)
CASES = [
    ("root zarr.json missing", delete("zarr.json"), INFO, 2, ["no Zarr v3 store"]),
    ("root zarr.json empty", write("zarr.json", b""), INFO, 2, ["refusing to decode"]),
    ("root zarr.json binary", write("zarr.json", os.urandom(64)), NORMS, 2, ["refusing"]),
    ("root zarr.json a JSON list", write("zarr.json", b"[1, 2]"), INFO, 2, ["refusing"]),
    ("root zarr.json a folder", into_folder("zarr.json"), INFO, 2, []),
    ("no vitreg attributes", root_meta(lambda m: m["attributes"].pop("vitreg")), INFO, 2,
     ["not a vitreg store"]),
    ("vitreg attributes a string", root_meta(lambda m: m["attributes"].update(vitreg="x")),
     INFO, 2, ["not a vitreg store"]),
    ("schema 99.0", attr("schema_version", "99.0"), INFO, 2, ["cannot be read by this vitreg"]),
    ("complete: \"true\"", attr("complete", "true"), NORMS, 2, ["'complete' is 'true' (str)"]),
    ("threshold a string", attr("outlier_threshold", {"percentile": 98, "value": "high"}),
     PROBE, 2, ["'outlier_threshold' is"]),
    ("n_rows 1e13", attr("n_rows", 10**13), INFO, 2, ["'n_rows' is 10000000000000"]),
    ("failed_rows negative", attr("failed_rows", [-3]), NORMS, 2, ["'failed_rows' is [-3]"]),
    ("NaN in the grid", attr("grid", [float("nan"), 4]), INFO, 2, ["'grid' is [nan, 4]"]),
    ("markup in the model name", attr("model", "[bold]x[/bold]\x1b[8m"), INFO, 0,
     ["[bold]x[/bold]\\x1b[8m"]),
    ("norms chunk deleted", delete("norms/c/1/0"), NORMS, 2, ["norms/c/1/0", MISSING]),
    ("tokens chunk deleted", delete("tokens/c/3/0/0"), PROBE, 2, ["tokens/c/3/0/0", MISSING]),
    ("error chunk deleted", delete("error/c/0"), VERIFY, 1, ["error/c/0: missing"]),
    ("key chunk deleted", delete("key/c/2"), ["analysis", "maps", "{url}", "--out", "{out}"], 2,
     ["key/c/2", MISSING]),
    ("norms chunk truncated", truncate("norms/c/1/0", 100), NORMS, 2, ["is 100 bytes, expected"]),
    ("norms chunk emptied", truncate("norms/c/0/0", 0), NORMS, 2, ["is 0 bytes, expected"]),
    ("norms chunk grown", extend("norms/c/2/0"), NORMS, 2, ["bytes, expected"]),
    ("tokens chunk grown", shard_points_past_end, PROBE, 2, ["tokens/c/2/0/0", "expected"]),
    ("norms chunk a folder", into_folder("norms/c/1/0"), NORMS, 2, ["norms/c/1/0"]),
    ("norms chunk linked outside", link("norms/c/1/0", "elsewhere/chunk"), NORMS, 2,
     ["symbolic link", "outside the store"]),
    ("norms chunks folder linked outside", link("norms/c", "elsewhere/c"), NORMS, 2,
     ["outside the store"]),
    ("chunk link loop", link("norms/c/1/0", None), NORMS, 2, ["norms/c/1/0"]),
    ("pack a store linked outside", link("label/c/0", "elsewhere/label"), PACK, 2,
     ["symbolic link"]),
    ("status rows 1e13", array_meta("status", lambda m: m.update(shape=[10**13])), INFO, 2,
     ["more than 1,000,000,000 rows"]),
    ("norms chunk of 2^40 rows", array_meta("norms", lambda m: m["chunk_grid"][
        "configuration"].update(chunk_shape=[2**40, 21])), NORMS, 2, ["refusing to read it"]),
    ("label dtype int16", array_meta("label", lambda m: m.update(data_type="int16")), INFO, 2,
     ["'label' has dtype int16"]),
    ("norms missing from the metadata", forget_array("norms"), NORMS, 2,
     ["lacks the required array 'norms'"]),
    ("gzip bomb in norms", gzip_bomb, NORMS, 2, ["decodes to more than", "refusing"]),
    ("zip with a deflated member", packed(deflate_norms), INFO, 2, ["is compressed"]),
    ("zip cut in half", packed(raw=lambda b: b[: len(b) // 2]), INFO, 2, ["not a readable zip"]),
    ("zip that is text", packed(raw=lambda b: b"not a zip\n" * 10), INFO, 2,
     ["not a readable zip"]),
    ("zip norms chunk missing", packed(lambda i, d: (b"", 0) if i.filename == "norms/c/1/0"
                                       else (d, 0)), NORMS, 2, ["norms/c/1/0"]),
    ("store path is a file", not_a_store("file"), INFO, 2, ["no Zarr v3 store"]),
    ("store folder empty", not_a_store("empty"), NORMS, 2, ["no Zarr v3 store"]),
    ("unknown URL scheme", not_a_store("scheme"), INFO, 2, ["nosuchscheme"]),
    ("nothing listening", not_a_store("port"), INFO, 2, ["127.0.0.1:9"]),
]


@pytest.mark.parametrize("case, damage, command, code, words", CASES,
                         ids=[c[0] for c in CASES])
def test_sweep(pristine, tmp_path, case, damage, command, code, words):
    store = tmp_path / "store.zarr"
    shutil.copytree(pristine, store)
    url = damage(store)
    args = [a.format(url=url, out=tmp_path / "out") for a in command]
    result = CliRunner().invoke(cli, args, terminal_width=400)
    assert result.exit_code == code, (case, result.output, result.exception)
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    for word in words:
        assert word in flat, (case, word, result.output)


def test_sweep_a_404_chunk_over_http(pristine, tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(pristine, store)
    (store / "tokens" / "c" / "1" / "0" / "0").unlink()
    with static_server(tmp_path) as (base, _):
        result = CliRunner().invoke(cli, [a.format(url=f"{base}/store.zarr", out=tmp_path / "o")
                                          for a in PROBE])
    assert result.exit_code == 2 and "tokens/c/1/0/0" in result.output and MISSING in " ".join(
        result.output.split()), result.output
