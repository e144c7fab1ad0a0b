"""Codecs, writes and reads of the cache against the raw disk, in one run.

    .venv/bin/python bench/bench_storage.py [--store STORE | --images DIR] [--rows 2000]
        [--repeats 3]

Takes `tokens` from a store (by default it first extracts the JPEGs of
--images, or 100 made from packaged photos, with vit_small_patch14_reg4_dinov2
and random weights, which the output says), tiles them to --rows images, and
measures:

1. bytes on disk and write/read speed of `tokens` for each codec considered
   (none, zstd 1, zstd 3, blosc-zstd with bit-shuffle);
2. vitreg's ChunkWriter (the chosen codec) against plain sequential file
   writes of the same bytes, and the time the caller waited on it;
3. chunked sequential reads of `tokens` through vitreg's reader (and plain
   zarr) against a `.npy` memory map of the same data, the median latency of
   one random row, and the per-image read time of `pooled/*` and `norms`
   against `tokens` through `Store.batches`;
4. the small arrays of real images stored raw (schema 1.1) against zstd-1
   (schema 1.0): bytes, and per-image reads through `Store.batches`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from benchutil import add_images_option, drop_cache, image_folder, load_jpegs, write_shards
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from vitreg.cache import ChunkWriter, Geometry, arrays_for, create_store, open_store
from vitreg.cache.create import COMPRESSORS, chunk_rows_for
from vitreg.testing import synthetic_attrs, write_store

CODECS = {
    "none": (),
    "zstd-1": (ZstdCodec(level=1),),
    "zstd-3": (ZstdCodec(level=3),),
    "blosc-zstd-bitshuffle": (BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle),),
}


SMALL = ("norms", "attention", "neighbor_cos", "pooled/cls", "pooled/patch_mean", "pooled/registers")


def source_tokens(args: argparse.Namespace, tmp: Path) -> tuple[np.ndarray, dict, str]:
    """`tokens` and the small arrays of a store of real images, tiled to --rows."""
    if args.store:
        store = open_store(args.store)
    else:
        from vitreg.extract.run import run_extract

        jpegs = load_jpegs(image_folder(args.images, tmp))
        shards = write_shards(jpegs, len(jpegs), tmp / "shards", per_shard=1000)
        run_extract(shards=shards, model="vit_small_patch14_reg4_dinov2.lvd142m",
                    out=str(tmp / "src.zarr"), weights="random", img_size=224,
                    precision="bf16", batch_size=16, progress=False)
        store = open_store(str(tmp / "src.zarr"))
    def tiled(name: str) -> np.ndarray:
        values = store.array(name)[:]
        return np.concatenate([values] * -(-args.rows // len(values)))[: args.rows]

    small = {name: tiled(name) for name in SMALL}
    return tiled("tokens"), small, f"{store.meta['model']} ({store.meta['weights']} weights)"


def small_codecs(small: dict, geom: Geometry, tmp: Path, chunk_rows: int, repeats: int) -> None:
    """Schema 1.1 (raw) against 1.0 (zstd-1) for the small arrays: bytes, and
    per-image reads through Store.batches (page cache warm), interleaved."""
    import vitreg.cache.create as store_mod

    urls = {}
    for label, compressors in (("raw (1.1)", ()), ("zstd-1 (1.0)", (ZstdCodec(level=1),))):
        saved, store_mod.COMPRESSORS = store_mod.COMPRESSORS, compressors
        try:
            urls[label] = write_store(str(tmp / f"small-{len(urls)}.zarr"), small, geometry=geom,
                                      chunk_rows=chunk_rows, rows_per_put=chunk_rows)
        finally:
            store_mod.COMPRESSORS = saved
    n = len(next(iter(small.values())))
    times: dict = {(label, name): [] for label in urls for name in small}
    for _ in range(repeats):
        for label, url in urls.items():
            store = open_store(url)
            for name in small:
                times[(label, name)].append(timed(lambda: list(store.batches([name]))) / n * 1e6)
    print(f"{'array':20s} {'raw bytes':>10s} " + " ".join(f"{lab + ' ratio':>19s}" for lab in urls)
          + "   us/image: " + "   ".join(urls))
    for name in small:
        stored = {lab: open_store(u).array(name).nbytes_stored() for lab, u in urls.items()}
        raw = small[name].nbytes
        print(f"{name:20s} {raw / n:8.0f} B " + " ".join(f"{raw / b:19.3f}" for b in stored.values())
              + "   " + "   ".join(f"{statistics.median(times[(lab, name)]):6.1f}" for lab in urls))


def codec_table(tokens: np.ndarray, tmp: Path, chunk_rows: int) -> None:
    raw = tokens.nbytes
    print(f"\n1. codecs on tokens {tokens.shape} float16, {raw / 2**20:.0f} MiB, chunks of {chunk_rows} rows")
    print(f"{'codec':24s} {'ratio':>6s} {'write MB/s':>11s} {'read MB/s':>10s}")
    for name, compressors in CODECS.items():
        path = tmp / f"codec-{name}.zarr"
        array = zarr.create_array(str(path), shape=tokens.shape, dtype="float16",
                                  chunks=(chunk_rows, *tokens.shape[1:]), compressors=compressors)
        start = time.perf_counter()
        for s in range(0, len(tokens), chunk_rows):
            array[s:s + chunk_rows] = tokens[s:s + chunk_rows]
        write = time.perf_counter() - start
        drop_cache(path)
        start = time.perf_counter()
        for s in range(0, len(tokens), chunk_rows):
            array[s:s + chunk_rows]
        read = time.perf_counter() - start
        print(f"{name:24s} {raw / array.nbytes_stored():6.3f} {raw / write / 1e6:11.0f} {raw / read / 1e6:10.0f}")


def writer_vs_raw(tokens: np.ndarray, tmp: Path, chunk_rows: int, rep: int = 0) -> tuple[float, ...]:
    """Seconds of ChunkWriter and of raw writes (fsync included), and the caller's wait."""
    n = len(tokens)
    # Only the token count matters here: one prefix token and T - 1 patches.
    geom = Geometry(registers=0, grid=(1, tokens.shape[1] - 1), dim=tokens.shape[2], depth=1,
                    img_size=224)
    root = create_store(str(tmp / f"writer-{rep}.zarr"), geometry=geom, n_rows=n, chunk_rows=chunk_rows,
                        specs=[s for s in arrays_for([], "all") if s.name in ("tokens", "status")],
                        attrs=synthetic_attrs(geom))
    writer = ChunkWriter(root, ["tokens", "status"])
    ones = np.ones(n, np.uint8)
    batch = 16
    start = time.perf_counter()
    for s in range(0, n, batch):
        writer.put(np.arange(s, min(s + batch, n)), {"tokens": tokens[s:s + batch], "status": ones[s:s + batch]})
    writer.close()
    os.sync()
    vitreg_s = time.perf_counter() - start
    start = time.perf_counter()
    with open(tmp / f"raw-{rep}.bin", "wb") as f:
        for s in range(0, n, chunk_rows):
            f.write(tokens[s:s + chunk_rows].tobytes())
        f.flush()
        os.fsync(f.fileno())
    raw_s = time.perf_counter() - start
    # zarr alone: whole chunks straight from the caller, no ChunkWriter buffers or thread
    direct = zarr.create_array(str(tmp / f"direct-{rep}.zarr"), shape=tokens.shape, dtype="float16",
                               chunks=(chunk_rows, *tokens.shape[1:]), compressors=COMPRESSORS)
    start = time.perf_counter()
    for s in range(0, n, chunk_rows):
        direct[s:s + chunk_rows] = tokens[s:s + chunk_rows]
    os.sync()
    direct_s = time.perf_counter() - start
    mb = tokens.nbytes / 1e6
    print(f"  repeat {rep}: ChunkWriter {mb / vitreg_s:6.0f} MB/s   zarr direct {mb / direct_s:6.0f} MB/s   "
          f"raw file writes {mb / raw_s:6.0f} MB/s   ratio {raw_s / vitreg_s:.2f}   caller waited "
          f"{writer.waited:.2f} s of {vitreg_s:.2f} s")
    shutil.rmtree(tmp / f"writer-{rep}.zarr")
    shutil.rmtree(tmp / f"direct-{rep}.zarr")
    os.unlink(tmp / f"raw-{rep}.bin")
    return vitreg_s, raw_s, writer.waited, direct_s


def reads_setup(tokens: np.ndarray, tmp: Path, chunk_rows: int) -> dict:
    """A vitreg store (through the real writer) and a `.npy` file of the same tokens."""
    geom = Geometry(registers=0, grid=(1, tokens.shape[1] - 1), dim=tokens.shape[2], depth=1,
                    img_size=224)
    arrays = {
        "tokens": tokens,
        "norms": np.linalg.norm(tokens.astype(np.float32), axis=-1),
        "pooled/cls": tokens[:, 0].astype(np.float32),
    }
    write_store(str(tmp / "reads.zarr"), arrays, geometry=geom, chunk_rows=chunk_rows,
                rows_per_put=chunk_rows)
    np.save(tmp / "tokens.npy", tokens)
    return arrays


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def reads(tokens: np.ndarray, tmp: Path, chunk_rows: int, arrays: dict, rep: int = 0) -> dict:
    """Sequential passes from a cold page cache (each consumes the rows into a new
    array), random rows, and whole-store passes per array through `Store.batches`."""
    n, path = len(tokens), tmp / "reads.zarr"
    store = open_store(str(path))
    reader, raw = store.reader("tokens"), store.array("tokens")
    mm = np.load(tmp / "tokens.npy", mmap_mode="r")
    passes = {
        "vitreg": lambda: [np.array(reader[s:s + chunk_rows]) for s in range(0, n, chunk_rows)],
        "zarr": lambda: [raw[s:s + chunk_rows] for s in range(0, n, chunk_rows)],
        "npy": lambda: [np.array(mm[s:s + chunk_rows]) for s in range(0, n, chunk_rows)],
    }
    seconds = {}
    for name, fn in passes.items():
        drop_cache(path)
        drop_cache(tmp / "tokens.npy")
        seconds[name] = timed(fn)
    rows = np.random.default_rng(42).integers(0, n, 30)
    one_row = {"vitreg": lambda r: np.array(reader[r:r + 1]), "zarr": lambda r: raw[int(r)]}
    row_ms = {}
    for name, fn in one_row.items():
        list(store.batches(["tokens"]))  # the whole store into the page cache
        warm = statistics.median(timed(lambda: fn(r)) for r in rows)
        cold = []
        for r in rows:
            drop_cache(path / "tokens")
            cold.append(timed(lambda: fn(r)))
        row_ms[name], row_ms[f"{name} cold"] = warm * 1e3, statistics.median(cold) * 1e3
    per_image = {name: timed(lambda: list(store.batches([name]))) / n * 1e6 for name in arrays}
    r = {**{k: tokens.nbytes / v / 1e6 for k, v in seconds.items()},
         **{f"row_ms {k}": v for k, v in row_ms.items()}, **per_image}
    print(f"  repeat {rep}: vitreg {r['vitreg']:6.0f} MB/s  zarr {r['zarr']:6.0f} MB/s  "
          f"npy memmap {r['npy']:6.0f} MB/s  vitreg/npy {r['vitreg'] / r['npy']:.2f}  "
          f"random row (warm/cold) vitreg {row_ms['vitreg']:.3f}/{row_ms['vitreg cold']:.2f} ms "
          f"zarr {row_ms['zarr']:.2f}/{row_ms['zarr cold']:.2f} ms  "
          "us/image (Store.batches): " + "  ".join(f"{k} {per_image[k]:.1f}" for k in arrays))
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store")
    add_images_option(parser)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-storage-", dir=os.environ.get("VITREG_BENCH_DIR")))
    tokens, small, source = source_tokens(args, tmp)
    chunk_rows = chunk_rows_for(tokens[0].nbytes)
    print(f"tokens from {source}; {tmp}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    codec_table(tokens, tmp, chunk_rows)
    mb = tokens.nbytes / 1e6
    codec = COMPRESSORS or "none"
    print(f"\n2. writing {mb:.0f} MB of tokens through ChunkWriter (codec {codec}) vs raw writes, "
          f"fsync included, {args.repeats} repeats interleaved")
    w = [writer_vs_raw(tokens, tmp, chunk_rows, rep) for rep in range(args.repeats)]
    v_s, r_s, wait, d_s = (statistics.median(x[i] for x in w) for i in range(4))
    print(f"median: ChunkWriter {mb / v_s:.0f} MB/s   zarr direct {mb / d_s:.0f} MB/s   raw {mb / r_s:.0f} MB/s"
          f"   ratio {r_s / v_s:.2f}   "
          f"caller waited {wait:.2f} s of {v_s:.2f} s")
    print(f"\n3. reading {mb:.0f} MB of tokens in chunks of {chunk_rows} rows (page cache dropped "
          f"before each pass), {args.repeats} repeats")
    arrays = reads_setup(tokens, tmp, chunk_rows)
    rs = [reads(tokens, tmp, chunk_rows, arrays, rep) for rep in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    print(f"median: vitreg reader {med['vitreg']:.0f} MB/s   zarr {med['zarr']:.0f} MB/s   npy memmap "
          f"{med['npy']:.0f} MB/s   vitreg / npy {med['vitreg'] / med['npy']:.2f}   zarr / npy "
          f"{med['zarr'] / med['npy']:.2f}")
    print(f"one random row, page cache warm: vitreg reader {med['row_ms vitreg']:.3f} ms   zarr "
          f"{med['row_ms zarr']:.2f} ms (zarr reads the whole chunk)")
    print(f"one random row, page cache dropped: vitreg reader {med['row_ms vitreg cold']:.2f} ms   "
          f"zarr {med['row_ms zarr cold']:.2f} ms")
    print("per image, whole store through Store.batches:")
    for name in arrays:
        if name != "tokens":
            t, a = med["tokens"], med[name]
            print(f"  {name:11s} {a:8.1f} us/image   tokens {t:8.1f} us/image   tokens / {name} {t / a:.1f}x")
    print(f"\n4. small arrays, {len(tokens)} rows in chunks of {chunk_rows}: no codec (schema 1.1) "
          f"against zstd-1 (schema 1.0), bytes and reads, {args.repeats} repeats interleaved")
    geom = Geometry(registers=small["pooled/registers"].shape[1],
                    grid=(1, small["neighbor_cos"].shape[1]), dim=tokens.shape[2], depth=1,
                    img_size=224)
    small_codecs(small, geom, tmp, chunk_rows, args.repeats)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
