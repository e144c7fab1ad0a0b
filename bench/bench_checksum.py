"""What the `crc32c` checksum of every chunk (schema 1.3) costs, in one run.

    .venv/bin/python bench/bench_checksum.py [--rows 1024] [--repeats 3]
        [--images DIR] [--extract-images 128] [--model NAME]

1. The writer alone: `ChunkWriter` writing every array of a ViT-S/14-reg4
   store (T = 261, D = 384, 64 rows a chunk) from memory, with the checksum
   codec and without, alternating, median MB/s of each and their ratio.
2. `run_extract` end to end (random weights, float32 on CPU) on the same
   shards, with and without, alternating: images/s and their ratio (the
   issue's bar: >= 0.95).
3. `vitreg verify` of the checksummed store of 1: the checksum pass alone
   (every chunk fetched and hashed) and the whole command, in seconds per GB
   of chunk files, page cache warm (the store was just written).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import add_images_option, image_folder, load_jpegs, write_shards

import vitreg.cache.create as store_module
from vitreg.cache import ChunkWriter, Geometry, arrays_for, create_store
from vitreg.cache.cli import run_verify
from vitreg.cache.integrity import check_checksums
from vitreg.cache.reader import mark_complete
from vitreg.testing import synthetic_attrs

VIT_S = Geometry(registers=4, grid=(16, 16), dim=384, depth=12, img_size=224)
CHECKSUM = store_module.COMPRESSORS  # (Crc32cCodec(),), the schema's choice


def rows_of_data(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    specs = arrays_for([], "all")
    data = {}
    for spec in specs:
        shape = (n, *spec.row_shape(VIT_S, 0))
        if spec.dtype == "string":
            data[spec.name] = np.array([f"{i:08d}" for i in range(n)], dtype=object)
        elif spec.name == "status":
            data[spec.name] = np.ones(n, np.uint8)
        else:
            data[spec.name] = rng.normal(size=shape).astype(spec.dtype)
    data["error"][:] = ""
    return data


def write_once(url: str, data: dict[str, np.ndarray], checksum: bool) -> float:
    """Seconds to write `data` through ChunkWriter into a new store."""
    store_module.COMPRESSORS = CHECKSUM if checksum else ()
    n = len(data["status"])
    root = create_store(url, geometry=VIT_S, n_rows=n, specs=arrays_for([], "all"),
                        attrs=synthetic_attrs(VIT_S), chunk_rows=64, overwrite=True)
    start = time.perf_counter()
    writer = ChunkWriter(root, list(data))
    for lo in range(0, n, 16):  # batches of 16, as extract puts them
        rows = np.arange(lo, min(lo + 16, n))
        writer.put(rows, {k: v[rows] for k, v in data.items()})
    writer.close()
    seconds = time.perf_counter() - start
    mark_complete(root)
    return seconds


def extract_once(shards: list[str], out: str, model: str, checksum: bool) -> float:
    from vitreg.extract.run import run_extract

    store_module.COMPRESSORS = CHECKSUM if checksum else ()
    start = time.perf_counter()
    run_extract(shards=shards, model=model, out=out, weights="random", img_size=224,
                batch_size=16, precision="fp32", workers=0, overwrite=True, progress=False)
    return time.perf_counter() - start


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extract-images", type=int, default=128)
    parser.add_argument("--model", default="vit_tiny_patch16_224")  # fast: the write weighs more
    add_images_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=None) as tmp_name:
        tmp = Path(tmp_name)
        data = rows_of_data(args.rows)
        payload = sum(v.nbytes for v in data.values() if v.dtype != object)
        times: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(args.repeats):
            for checksum in ((True, False) if repeat % 2 == 0 else (False, True)):
                times[checksum].append(write_once(str(tmp / f"w{checksum}.zarr"), data, checksum))
        mbs = {k: payload / statistics.median(v) / 1e6 for k, v in times.items()}
        print(f"1. writer, {args.rows} rows ({payload / 1e6:.0f} MB), median of {args.repeats}: "
              f"checksum on {mbs[True]:.0f} MB/s, off {mbs[False]:.0f} MB/s, "
              f"ratio on/off {mbs[True] / mbs[False]:.3f}")

        jpegs = load_jpegs(image_folder(args.images, tmp))
        shards = write_shards(jpegs, args.extract_images, tmp / "shards", per_shard=1000)
        extract_once(shards, str(tmp / "warm.zarr"), args.model, True)  # warm-up
        ex: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(args.repeats):
            for checksum in ((True, False) if repeat % 2 == 0 else (False, True)):
                ex[checksum].append(extract_once(shards, str(tmp / f"e{checksum}.zarr"),
                                                 args.model, checksum))
        ips = {k: args.extract_images / statistics.median(v) for k, v in ex.items()}
        pairs = [off / on for on, off in zip(ex[True], ex[False])]  # run next to run
        stored = folder_bytes(tmp / "eTrue.zarr")
        # what the checksum can cost at most: the writer's extra seconds per byte
        # (part 1) times the bytes extract writes, over extract's time
        extra_s_per_byte = 1 / (mbs[True] * 1e6) - 1 / (mbs[False] * 1e6)
        bound = extra_s_per_byte * stored / statistics.median(ex[True])
        print(f"2. extract {args.model}, {args.extract_images} images, fp32 CPU, median of "
              f"{args.repeats}: checksum on {ips[True]:.2f} img/s, off {ips[False]:.2f} img/s, "
              f"ratio on/off {ips[True] / ips[False]:.3f} (pairs: "
              f"{', '.join(f'{p:.3f}' for p in pairs)}); {stored / args.extract_images / 1e3:.0f} "
              f"KB written per image, so the checksum's share of extract time is at most "
              f"{bound:.2%} (part 1's extra cost per byte)")

        store_module.COMPRESSORS = CHECKSUM
        url = tmp / "wTrue.zarr"
        gb = folder_bytes(url) / 1e9
        import zarr

        root = zarr.open_group(str(url), mode="r")
        names = [n for n, _ in root.arrays()] + [f"pooled/{n}" for n, _ in root["pooled"].arrays()]
        start = time.perf_counter()
        report = check_checksums(root, names, skip_missing=False)
        pass_s = time.perf_counter() - start
        start = time.perf_counter()
        full = run_verify(str(url))
        full_s = time.perf_counter() - start
        assert not report.problems and not full.problems
        print(f"3. verify of {gb:.3f} GB ({report.checked} chunks), page cache warm: checksum "
              f"pass {pass_s / gb:.2f} s/GB, whole `vitreg verify` {full_s / gb:.2f} s/GB")


if __name__ == "__main__":
    main()
