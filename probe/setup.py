"""The full setup of a probe result, as data: which weights, preprocessing, tokens and
splits its numbers come from, and which protocol chose its epochs and grid values.

The report compares it, field by field, with the study's setup of the same table
(`analysis.study`), and marks every difference in the result's row.
"""

from __future__ import annotations

from typing import Any

from vitreg.cache import Store


def store_setup(store: Store) -> dict[str, Any]:
    """What a store's tokens are: model and tag, weights, input, precision, token mode."""
    meta = store.meta
    prep = meta.get("preprocessing") or {}
    return {
        "url": store.url,
        "model": meta.get("model"),
        "pretrained_cfg": meta.get("pretrained_cfg"),
        "weights": meta.get("weights"),
        "img_size": meta.get("img_size"),
        "preprocessing_preset": meta.get("preprocessing_preset"),
        "crop_pct": prep.get("crop_pct"),
        "interpolation": prep.get("interpolation"),
        "precision": meta.get("precision"),
        "token_mode": meta.get("token_mode"),
        # 1 the first block; None: the last, as the study reads it
        "block": None if store.block is None else store.block + 1,
        "depth": meta.get("depth"),
        "split_shards": [s.get("url") for s in meta.get("shards") or []][:3],
    }


def truncation_of(counts: dict[str, Any]) -> dict[str, Any] | None:
    """Per part, the images of a sampled store with more outliers than it kept (K/2)."""
    parts = {name: {k: c.get(k) for k in ("sampled_k_half", "truncated_images",
                                          "outliers_not_kept", "images", "used")}
             for name, c in (counts or {}).items()
             if isinstance(c, dict) and c.get("sampled_k_half") is not None}
    return parts or None


def result_setup(kind: str, train: Store, val: Store | None, options: dict[str, Any],
                 counts: dict[str, Any], selection: dict[str, Any] | None) -> dict[str, Any]:
    """The setup record every result carries (`result["setup"]`)."""
    return {
        "probe": kind,
        "train_store": store_setup(train),
        "val_store": None if val is None else store_setup(val),
        "reported_on": "the --val store" if val is not None else
        f"a held-out {float(options['val_fraction']):g} of the training store's images",
        "selection": selection,
        "backend": options.get("backend"),
        "standardize": options.get("standardize"),
        "percentile": options.get("percentile"),
        "threshold_from": options.get("threshold_from") or "the training store",
        "truncation": truncation_of(counts),
        "head": options.get("head"),
    }
