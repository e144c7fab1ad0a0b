"""The root attributes of a store: built, validated and compared in one place.

`ATTRIBUTES` is the table of `cache_schema.md` ("Root attributes"), row for
row (a test compares them); `root_attrs` builds the attributes a writer
records, refusing a missing or unknown key; `check_config` is the rule for
resuming into an existing store.
"""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Callable
from typing import Any

import zarr

from vitreg.core.scrub import redact
from vitreg.core.version import __version__

from .errors import ConfigMismatchError, StoreFormatError

#: (keys, meaning): one row of the schema document's table each.
ATTRIBUTES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("schema_version",), "this document's version; readers MUST refuse another major version"),
    (("complete",), "true once every row is ok or failed"),
    (("model", "pretrained_cfg"), "the timm name given, and timm's `architecture.tag`"),
    (("weights",), "`pretrained`, `random` (values mean nothing) or the file path"),
    (("weights_sha256",), "sha256 over the model's state dict as loaded (names and raw bytes, "
                          "sorted by name)"),
    (("weights_file",), "for a file: its path and its file sha256"),
    (("img_size", "patch_size", "grid", "dynamic_img_size"),
     "geometry; the model is built at `img_size` (a checkpoint's position embedding is "
     "resampled once, at load); `dynamic_img_size` is true only for a model that cannot be "
     "built at that size and resamples at every forward pass"),
    (("prefix_tokens", "registers", "embed_dim", "depth", "heads"), "the model"),
    (("prefix_layout", "attention_query"),
     "(1.6) what each prefix token is (`cls`, `register`, `distillation`), in order (before "
     "1.6: [CLS], then the registers); whose attention `attention` holds: `cls` (the last "
     "block's [CLS] query), `map` (the pooling head's learned query) or null (no `attention` "
     "array)"),
    (("precision",), "`fp32`, `bf16` or `fp16` (autocast dtype)"),
    (("preprocessing",), "the exact keyword arguments of `timm.data.create_transform`"),
    (("preprocessing_preset",), "the named protocol they started from (`timm`, "
                                "`dinov2-linear`), before `--crop-pct` / `--interpolation`"),
    (("decode",), "null: images decoded by PIL and transformed by timm as `preprocessing` "
                  "says; `torchvision-device` (`--decode gpu`): JPEGs decoded by torchvision on "
                  "the run's device (what it refuses on the CPU), resized there by "
                  "torchvision's antialiased resize with `preprocessing`'s geometry"),
    (("token_mode", "with"), "which optional arrays exist"),
    (("tokens_dtype",), "`float16` (default) or `float32`"),
    (("shards",), "list of `{url, samples}` in stream order"),
    (("shard_digests",),
     "one per entry of `shards`, the shard's identity: `sha256:<hex>` over the names and sizes "
     "of its tar members in tar order (`name\\0size\\n` each), read from the tar headers; for a "
     "streamed (remote or compressed) shard `keys-sha256:<hex>` over its keys. A writer MUST "
     "refuse to resume when a shard's digest or sample count differs, and when a finished "
     "row's `key` differs from the key the shards put at that row"),
    (("n_rows", "seed"), "rows and the run's seed"),
    (("keys_file",), "with `--keys FILE`: `{path, sha256}` of the file; null otherwise"),
    (("blocks",), "(1.6) with `--blocks`: the 0-based indices of the blocks the `chosen/*` "
                  "arrays hold, increasing; null otherwise"),
    (("versions",), "vitreg, timm, torch, zarr, python"),
    (("outlier_threshold",), "`{percentile: 98.0, value}` written once when the store completes"),
    (("failed_rows",), "written when the store completes: the indices of the rows with status 2 "
                       "(null if more than 100,000), so that readers of a complete store need "
                       "not read `status`"),
    (("stored_bytes",), "written when the store completes: bytes on disk of each array's chunk "
                        "files, by array name (a reader over HTTP cannot list the files to add "
                        "them up)"),
)

#: Written by `cache` itself (at creation or completion), not by the caller of `root_attrs`.
CACHE_KEYS = (
    "schema_version", "complete", "outlier_threshold", "failed_rows", "stored_bytes")
#: What the writer of a store supplies.
WRITER_KEYS = tuple(key for keys, _ in ATTRIBUTES for key in keys if key not in CACHE_KEYS)
#: Attributes that define what a store holds; a rerun must match them all.
CONFIG_KEYS = (
    "model", "weights", "weights_sha256", "img_size", "dynamic_img_size", "precision",
    "preprocessing", "token_mode", "tokens_dtype", "with", "shards", "n_rows", "seed",
    "keys_file", "blocks", "decode",
)
#: Checked on resume too, by `shard_diffs`: absent from stores of schema 1.1.
SHARD_DIGESTS = "shard_digests"


def root_attrs(*, versions: dict[str, str], **values: Any) -> dict[str, Any]:
    """The attributes a writer records: every key of `WRITER_KEYS`, no other.
    `versions` names the writer's libraries; vitreg's, zarr's and Python's are added.
    Shard URLs are recorded without credentials (a store is shared)."""
    if isinstance(values.get("shards"), list):
        values["shards"] = [{**s, "url": redact(s["url"])} if isinstance(s, dict) and "url" in s
                            else s for s in values["shards"]]
    values["versions"] = {"vitreg": __version__, **versions, "zarr": zarr.__version__,
                          "python": platform.python_version()}
    missing = [key for key in WRITER_KEYS if key not in values]
    unknown = [key for key in values if key not in WRITER_KEYS]
    if missing or unknown:
        raise TypeError(f"root attributes: missing {missing}, unknown {unknown} "
                        "(add a key to cache.attrs.ATTRIBUTES and cache_schema.md first)")
    return {key: values[key] for key in WRITER_KEYS}


def check_config(old: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Refuse to resume into a store written with another configuration."""
    diffs = [
        f"{key}: store has {old.get(key)!r}, this run {attrs.get(key)!r}"
        for key in CONFIG_KEYS if key != "shards" and old.get(key) != attrs.get(key)
    ]
    diffs += shard_diffs(old.get("shards") or [], attrs["shards"], old.get(SHARD_DIGESTS),
                         attrs[SHARD_DIGESTS])
    if diffs:
        raise ConfigMismatchError(
            "the store was written with a different configuration:\n  " + "\n  ".join(diffs)
            + "\nuse another --out, or --overwrite to start afresh"
        )


def shard_diffs(old: list[dict[str, Any]], new: list[dict[str, Any]],
                old_digests: list[str | None] | None, new_digests: list[str | None]) -> list[str]:
    """How the input shards differ from those the store was started with.
    A store of schema 1.1 recorded no digests: only urls and counts compare."""
    if [s["url"] for s in old] != [s["url"] for s in new]:
        return [f"shards: store has {[s['url'] for s in old]}, this run {[s['url'] for s in new]}"]
    diffs = []
    for was, now, was_id, now_id in zip(old, new, old_digests or [None] * len(new), new_digests):
        if was.get("samples") != now["samples"]:
            diffs.append(f"shard {now['url']}: {was.get('samples')} samples when the store was "
                         f"started, {now['samples']} now")
        elif was_id is not None and was_id != now_id:
            diffs.append(f"shard {now['url']} was rewritten since the store was started "
                         "(its members' names, sizes or order differ)")
    return diffs


#: Attributes two stores must share for one to validate a probe trained on the other.
SAME_MODEL_KEYS = ("model", "weights", "weights_sha256", "img_size", "patch_size", "grid",
                   "prefix_tokens", "registers", "embed_dim")
#: The attributes every result names its store by.
PROVENANCE_KEYS = ("model", "weights", "weights_sha256", "schema_version")


def provenance(url: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Where a result's numbers come from: the store (its URL without
    credentials) and the model that wrote it."""
    return {"url": redact(url), **{key: meta.get(key) for key in PROVENANCE_KEYS}}


# -- validation of a store's attributes when it opens ----------------------------------------

#: Bounds of a store any reader accepts: far above any real model or data set
#: (ImageNet-21k has 14 million images; ViT-g/14 at 518 px has 1,374 tokens),
#: far below what would exhaust a machine's memory before a read.
MAX_ROWS = 10**9
MAX_SIDE = 16384  # pixels of an input image
MAX_GRID = 4096  # patches along one side
MAX_DIM = 65536
MAX_DEPTH = 1024
MAX_REGISTERS = 1024


def _int(low: int, high: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
            f"an integer from {low} to {high}")


def _optional(rule: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v is None or rule[0](v)), f"{rule[1]}, or null"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


_TEXT = (lambda v: isinstance(v, str) and len(v) <= 4096, "a string (at most 4096 characters)")
_BOOL = (lambda v: isinstance(v, bool), "true or false (a JSON boolean, not a string)")
_DICT = (lambda v: isinstance(v, dict), "an object")


_COUNT = _int(0, MAX_ROWS)[0]
_BYTES = _int(0, 2**62)[0]


def _shards(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(s, dict) and isinstance(s.get("url"), str) and _COUNT(s.get("samples"))
        for s in v)


def _threshold(v: Any) -> bool:
    return (isinstance(v, dict) and _number(v.get("percentile"))
            and 0 < v["percentile"] <= 100 and _number(v.get("value")) and v["value"] >= 0)


#: How each root attribute must look, when present: (test, what it must be).
#: Absent keys are the business of the reader that needs them; unknown keys
#: (a later minor version) are ignored; no number anywhere may be NaN or inf.
ATTRIBUTE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "schema_version": (lambda v: isinstance(v, str) and re.fullmatch(r"\d{1,4}\.\d{1,4}", v)
                       is not None, 'a version such as "1.5"'),
    "complete": _BOOL,
    "model": _TEXT, "pretrained_cfg": _optional(_TEXT), "weights": _TEXT,
    "weights_sha256": _optional(_TEXT), "weights_file": _optional(_DICT),
    "img_size": _int(1, MAX_SIDE), "patch_size": _optional(_int(1, MAX_SIDE)),
    "grid": (lambda v: isinstance(v, list) and len(v) == 2
             and all(_int(1, MAX_GRID)[0](g) for g in v), f"two integers from 1 to {MAX_GRID}"),
    "dynamic_img_size": _optional(_BOOL),
    # 0 for a model without [CLS] nor registers (1.6); [CLS] + distillation + registers at most
    "prefix_tokens": _int(0, MAX_REGISTERS + 2), "registers": _int(0, MAX_REGISTERS),
    "prefix_layout": _optional((lambda v: isinstance(v, list) and len(v) <= MAX_REGISTERS + 2
                                and all(k in ("cls", "register", "distillation") for k in v),
                                "a list of cls, register, distillation")),
    "attention_query": _optional((lambda v: v in ("cls", "map"), '"cls", "map" or null')),
    "blocks": _optional((lambda v: isinstance(v, list) and len(v) <= MAX_DEPTH
                         and all(_int(0, MAX_DEPTH - 1)[0](b) for b in v),
                         "a list of block indices")),
    "embed_dim": _int(1, MAX_DIM), "depth": _int(1, MAX_DEPTH),
    "heads": _optional(_int(1, MAX_DIM)),
    "precision": _optional(_TEXT), "preprocessing": _optional(_DICT),
    "preprocessing_preset": _optional(_TEXT), "token_mode": _TEXT,
    "with": (lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
             "a list of strings"),
    "tokens_dtype": _optional(_TEXT),
    "shards": (_shards, "a list of {url: string, samples: integer >= 0}"),
    "shard_digests": _optional((lambda v: isinstance(v, list) and all(
        d is None or isinstance(d, str) for d in v), "a list of strings or nulls")),
    "n_rows": _int(1, MAX_ROWS), "seed": _optional(_int(0, 2**64 - 1)),
    "keys_file": _optional(_DICT), "versions": _optional(_DICT),
    "outlier_threshold": _optional((_threshold, "{percentile: a number in (0, 100], value: "
                                                "a finite number >= 0}")),
    "failed_rows": _optional((lambda v: isinstance(v, list) and all(_COUNT(r) for r in v),
                              "a list of row indices")),
    "stored_bytes": _optional((lambda v: isinstance(v, dict) and all(
        _BYTES(n) for n in v.values()), "an object of byte counts >= 0")),
}


def check_attrs(meta: dict[str, Any]) -> None:
    """Refuse attributes of the wrong type or out of range (StoreFormatError
    naming the key, the value and what it must be)."""
    for key, (test, expected) in ATTRIBUTE_RULES.items():
        if key in meta and not test(meta[key]):
            raise StoreFormatError(
                f"attribute {key!r} is {shown(meta[key])}, expected {expected}; the store's "
                "attributes are malformed, so it is not read")
    bad = non_finite(meta)
    if bad:
        raise StoreFormatError(f"attribute {bad!r} holds NaN or an infinite number; the "
                               "store's attributes are malformed, so it is not read")
    failed = meta.get("failed_rows")
    if isinstance(failed, list) and isinstance(meta.get("n_rows"), int) \
            and any(r >= meta["n_rows"] for r in failed):
        raise StoreFormatError("attribute 'failed_rows' names a row past 'n_rows'; the store's "
                               "attributes are malformed, so it is not read")


def shown(value: Any) -> str:
    """A value as the error shows it: its JSON type, and at most 60 characters."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def non_finite(value: Any, where: str = "") -> str | None:
    """The path (`outlier_threshold.value`) of the first NaN or infinity in `value`."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "(root)"
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        if isinstance(item, float | dict | list):
            found = non_finite(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    return None
