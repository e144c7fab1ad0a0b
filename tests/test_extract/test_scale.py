"""Many processes into one store, sampled tokens, planning, stores that travel."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from tests.test_extract.test_pipeline import assert_same_store, extract
from vitreg.cache import ChunkWriter, open_store
from vitreg.cache.writer import UnalignedWriteError
from vitreg.extract.plan import count_shard

ROOT = Path(__file__).parents[2]
RUNNER = (
    "import sys; sys.path.insert(0, {root!r}); import tests.tiny_models; "
    "from vitreg.extract.cli import extract_command; extract_command()"
)


@pytest.fixture
def many_shards(tmp_path) -> list[str]:
    """Three shards, 30 samples: with chunks of 4 rows, ranks split mid-shard."""
    return [write_shard(tmp_path / f"m-{i}.tar", image_samples(10, start=10 * i)) for i in range(3)]


def cli_args(shards: list[str], out: Path) -> list[str]:
    return [
        *shards,
        "--model",
        "tiny_dinov2_reg4",
        "--weights",
        "random",
        "--out",
        str(out),
        "--batch-size",
        "3",
        "--chunk-rows",
        "4",
        "--no-progress",
        "--with",
        "pixels",
    ]


def test_two_torchrun_ranks_write_the_store_one_process_writes(tmp_path, many_shards):
    extract(many_shards, tmp_path / "one", batch_size=3)
    script = tmp_path / "run_extract.py"
    script.write_text(RUNNER.format(root=str(ROOT)).replace("; ", "\n"))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        *cli_args(many_shards, tmp_path / "two"),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2: rows 16..29" in result.stderr
    assert open_store(str(tmp_path / "two")).complete
    assert_same_store(str(tmp_path / "one"), str(tmp_path / "two"))


def test_independent_jobs_fill_one_store_in_any_order(tmp_path, many_shards):
    extract(many_shards, tmp_path / "one", batch_size=3)
    out = tmp_path / "jobs"
    cmds = [
        [
            sys.executable,
            "-c",
            RUNNER.format(root=str(ROOT)),
            *cli_args(many_shards, out),
            "--rank",
            str(r),
            "--world-size",
            "3",
        ]
        for r in range(3)
    ]
    procs = [subprocess.Popen(c, cwd=ROOT, stderr=subprocess.PIPE, text=True) for c in cmds[:2]]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    partial = open_store(str(out), allow_partial=True)
    assert not partial.complete and partial.counts()["ok"] == 20
    subprocess.run(cmds[2], cwd=ROOT, check=True, capture_output=True)
    assert open_store(str(out)).complete
    assert_same_store(str(tmp_path / "one"), str(out))


def test_unaligned_writer_fails_loudly(tmp_path, many_shards):
    import zarr

    extract(many_shards, tmp_path / "s")
    root = zarr.open_group(str(tmp_path / "s"), mode="r+")
    with pytest.raises(UnalignedWriteError, match="chunk boundaries"):
        ChunkWriter(root, ["status"], rows=(2, 8))
    writer = ChunkWriter(root, ["status"], rows=(4, 8))
    with pytest.raises(UnalignedWriteError, match="outside"):
        writer.put(np.array([8]), {"status": np.ones(1, np.uint8)})
    writer.abort()


def test_sampled_tokens_are_the_top_half_and_a_seeded_draw(tmp_path, shards):
    extract(shards, tmp_path / "all")
    extract(shards, tmp_path / "sampled", token_mode="sampled:6")
    full, sampled = open_store(str(tmp_path / "all")), open_store(str(tmp_path / "sampled"))
    assert "tokens" not in sampled and sampled.array("sampled/tokens").shape == (13, 6, 48)
    prefix = full.geometry.prefix
    norms, tokens = full.array("norms")[:, prefix:], full.array("tokens")[:, prefix:]
    index = sampled.array("sampled/index")[:].astype(np.int64)
    for row in range(13):
        top = np.argsort(-norms[row], kind="stable")[:3]
        np.testing.assert_array_equal(np.sort(index[row, :3]), np.sort(top))
        # The second half: 3 distinct patches drawn from all 16 (schema 1.2), seeded by row.
        assert len(set(index[row, 3:])) == 3 and (np.diff(index[row, 3:]) > 0).all()
        np.testing.assert_array_equal(sampled.array("sampled/tokens")[row], tokens[row, index[row]])
    again = tmp_path / "again"
    extract(shards, again, token_mode="sampled:6", batch_size=5, workers=2)
    assert_same_store(str(tmp_path / "sampled"), str(again))  # same draw whatever the batching


def test_dry_run_prints_rows_arrays_bytes_and_time(tmp_path, shards):
    from vitreg.extract.cli import extract_command

    runner = CliRunner()
    base = [
        *shards,
        "--model",
        "tiny_dinov2_reg4",
        "--weights",
        "random",
        "--out",
        str(tmp_path / "never"),
        "--dry-run",
        "--batch-size",
        "4",
    ]
    result = runner.invoke(extract_command, base)
    assert result.exit_code == 0, result.output
    assert "13 rows from 2 shard(s)" in result.output and "tokens" in result.output
    assert "img/s" in result.output and not (tmp_path / "never").exists()
    from vitreg.extract.dryrun import estimate_arrays
    from vitreg.extract.model import build_model

    geom = build_model("tiny_dinov2_reg4", weights="random").geometry
    all_tokens = {a.name: a for a in estimate_arrays(geom, 1000, with_options=[], token_mode="all")}
    assert all_tokens["tokens"].nbytes == 1000 * geom.tokens * geom.dim * 2
    sampled = estimate_arrays(geom, 1000, with_options=[], token_mode="sampled:4")
    assert sum(a.nbytes for a in sampled) < sum(a.nbytes for a in all_tokens.values())


def test_header_count_matches_streaming(tmp_path, shards):
    for shard in shards:
        assert count_shard(shard).keys == count_shard(f"pipe:cat {shard}").keys


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_out_takes_fsspec_urls(tmp_path, shards, scheme):
    url = f"memory://vitreg-test/{tmp_path.name}" if scheme == "memory" else f"file://{tmp_path}/s"
    extract(shards, url)
    extract(shards, tmp_path / "local")
    store = open_store(url)
    assert store.complete
    np.testing.assert_array_equal(
        store.array("tokens")[:], open_store(str(tmp_path / "local")).array("tokens")[:]
    )
    assert extract(shards, url).processed == 0  # resumes there too


def test_pack_writes_one_zip_every_reader_opens(tmp_path, shards):
    import zarr

    from vitreg.cli import cli

    extract(shards, tmp_path / "s")
    result = CliRunner().invoke(cli, ["pack", str(tmp_path / "s"), str(tmp_path / "s.zip")])
    assert result.exit_code == 0, result.output
    import zipfile

    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    packed, local = open_store(str(tmp_path / "s.zip")), open_store(str(tmp_path / "s"))
    for name in local.names:
        np.testing.assert_array_equal(packed.array(name)[:], local.array(name)[:])
    ds = xr.open_zarr(zarr.storage.ZipStore(str(tmp_path / "s.zip"), mode="r"), consolidated=False)
    np.testing.assert_array_equal(ds["norms"].values, local.array("norms")[:])


def test_shards_over_http(tmp_path, shards):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        urls = [f"http://127.0.0.1:{port}/{Path(s).name}" for s in shards]
        extract(urls, tmp_path / "http")
    finally:
        server.shutdown()
    extract(shards, tmp_path / "local")
    http_store = open_store(str(tmp_path / "http"))
    np.testing.assert_array_equal(
        http_store.array("tokens")[:], open_store(str(tmp_path / "local")).array("tokens")[:]
    )


def test_packed_store_opens_as_xarray_through_the_api(tmp_path, shards):
    from vitreg.cache.pack import run_pack

    extract(shards, tmp_path / "s")
    run_pack(str(tmp_path / "s"), str(tmp_path / "s.zip"))
    ds = open_store(str(tmp_path / "s.zip")).to_xarray()
    np.testing.assert_array_equal(
        ds["pooled/cls"].values, open_store(str(tmp_path / "s")).array("pooled/cls")[:]
    )


def test_probes_and_the_report_run_on_a_sampled_store(tmp_path):
    from vitreg.analysis.cli import run_report
    from vitreg.probe import run_probe

    shard = write_shard(tmp_path / "s.tar", image_samples(30))
    store = str(tmp_path / "sampled")
    extract([shard], store, token_mode="sampled:4")
    probes = []
    for kind in ("position", "reconstruct", "classify", "linear"):
        out = tmp_path / f"{kind}.json"
        result = run_probe(kind, store, out=str(out), epochs=1,
                           **({"min_steps": 0} if kind != "linear" else {}))
        assert result["metrics"], kind
        probes.append(str(out))
    report = run_report([store], out=str(tmp_path / "report"), probes=probes)
    assert "sampled" in open_store(store).meta["token_mode"] and report.exists()
