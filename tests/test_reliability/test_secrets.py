"""Credentials in a store's URL never reach an output: results JSON,
report.html, figures' metadata, the terminal, error messages, log lines,
the attributes a writer records."""

from __future__ import annotations

import logging
import shutil

import pytest
from click.testing import CliRunner

from tests.servers import static_server
from vitreg.cache import Geometry
from vitreg.cache.attrs import WRITER_KEYS, provenance, root_attrs
from vitreg.cli import cli
from vitreg.core.scrub import plain, redact
from vitreg.testing import write_planted_store

SECRET = "hunter2secret"
GEOM = Geometry(registers=1, grid=(4, 4), dim=8, depth=1, img_size=32)


@pytest.mark.parametrize("url, shown", [
    (f"http://alice:{SECRET}@host:8080/s.zarr", "http://host:8080/s.zarr"),
    (f"https://{SECRET}@host/s.zarr", "https://host/s.zarr"),
    (f"s3://AKIA:{SECRET}@bucket/s.zarr", "s3://bucket/s.zarr"),
    (f"https://host/s.zip?token={SECRET}&x=1", "https://host/s.zip?token=REDACTED&x=REDACTED"),
    (f"https://h/s.zip?X-Amz-Signature={SECRET}#frag", "https://h/s.zip?X-Amz-Signature=REDACTED#frag"),
    (f"see 'http://u:{SECRET}@h/x' and gs://k:{SECRET}@b/y.",
     "see 'http://h/x' and gs://b/y."),
    ("/data/user@host/store.zarr", "/data/user@host/store.zarr"),  # a path, not a URL
    ("http://h/a@b/c", "http://h/a@b/c"),  # an @ in the path is no user info
    ("pipe:curl -s http://u:p@h/x", "pipe:curl -s http://h/x"),
])
def test_redact_removes_user_info_and_query_values(url, shown):
    assert redact(url) == shown


def test_plain_escapes_control_characters():
    assert plain("a\x1b[2Jb\x07\r\u202ec\nd") == "a\\x1b[2Jb\\x07\\x0d\\u202ec\\nd"
    assert plain("x\ny", newlines=True) == "x\ny"


def test_a_writer_records_shard_urls_without_credentials():
    values = {key: None for key in WRITER_KEYS if key != "versions"}
    values["shards"] = [{"url": f"https://u:{SECRET}@h/train-000.tar?sig={SECRET}",
                         "samples": 3}]
    attrs = root_attrs(versions={}, **values)
    assert SECRET not in repr(attrs)
    assert attrs["shards"] == [{"url": "https://h/train-000.tar?sig=REDACTED", "samples": 3}]
    assert SECRET not in repr(provenance(f"http://u:{SECRET}@h/s", {}))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("secret")
    write_planted_store(str(folder / "store.zarr"), n_images=48, geometry=GEOM, seed=0,
                        chunk_rows=8, with_pixels=False)
    with static_server(folder) as (base, _):
        yield folder, base.replace("http://", f"http://alice:{SECRET}@") + "/store.zarr"


COMMANDS = [
    ["info", "{url}"],
    ["verify", "{url}"],
    ["analysis", "norms", "{url}", "--out", "{out}", "--images", "4"],
    ["analysis", "report", "{url}", "--out", "{out}", "--images", "4"],
    ["probe", "position", "{url}", "--out", "{out}/r.json", "--epochs", "1", "--normals", "8"],
    ["probe", "classify", "{url}", "--out", "{out}/r.json", "--epochs", "1"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_password_in_the_store_url_leaves_no_trace(served, tmp_path, caplog, args):
    folder, url = served
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(cli, [a.format(url=url, out=out) for a in args])
    assert result.exit_code in (0, 1), (result.output, result.exception)
    assert SECRET not in result.output
    assert SECRET not in caplog.text
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    if args[0] != "info" and args[0] != "verify":
        assert written, "the command wrote nothing to check"


def test_a_password_in_a_failing_url_leaves_no_trace_in_the_error(served, tmp_path):
    folder, url = served
    damaged = tmp_path / "d"
    shutil.copytree(folder, damaged)
    (damaged / "store.zarr" / "norms" / "c" / "1" / "0").unlink()
    for target in (url.replace("/store.zarr", "/nothing.zarr"),
                   url.replace("alice:", "alice:x").rsplit(":", 1)[0] + ":1/store.zarr"):
        result = CliRunner().invoke(cli, ["analysis", "norms", target, "--out", str(tmp_path)])
        assert result.exit_code == 2 and SECRET not in result.output, result.output
