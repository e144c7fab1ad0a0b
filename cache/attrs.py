"""The root attributes of a store: built, validated and compared in one place.

`ATTRIBUTES` is the table of `cache_schema.md` ("Root attributes"), row for
row (a test compares them); `root_attrs` builds the attributes a writer
records, refusing a missing or unknown key; `check_config` is the rule for
resuming into an existing store.
"""

from __future__ import annotations

import platform
from typing import Any

import zarr

from vitreg.core.version import __version__

from .errors import ConfigMismatchError

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
    `versions` names the writer's libraries; vitreg's, zarr's and Python's are added."""
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
    """Where a result's numbers come from: the store and the model that wrote it."""
    return {"url": url, **{key: meta.get(key) for key in PROVENANCE_KEYS}}
