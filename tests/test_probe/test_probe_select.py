"""Indices first: the split by image and the normal / outlier token draws,
checked against cache's own outlier rule."""

from __future__ import annotations

import numpy as np
import pytest

from vitreg.cache import Store, open_store
from vitreg.probe.select import (
    NORMAL,
    OUTLIER,
    Part,
    select_images_with_outliers,
    select_tokens,
    split_rows,
)


@pytest.fixture(scope="module")
def store(planted) -> Store:
    return open_store(planted)


def test_split_is_by_image_seeded_and_complete(store):
    train, val, info = split_rows(store, None, val_fraction=0.2, seed=42)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.union1d(train, val), store.ok_rows())
    assert val.size == 400 and info["val_images"] == 400
    _, val2, _ = split_rows(store, None, val_fraction=0.2, seed=42)
    assert np.array_equal(val, val2)
    _, other, _ = split_rows(store, None, val_fraction=0.2, seed=1)
    assert not np.array_equal(val, other)


def test_split_keeps_one_image_on_each_side(store):
    _, val, _ = split_rows(store, None, val_fraction=1e-6, seed=42)
    assert val.size == 1


def test_tokens_follow_the_stores_outlier_rule(store):
    part = Part("train", store, store.ok_rows(), 98.0)
    items = select_tokens(part, normals=None, seed=42)
    f = items.fields
    # An independent check: cache's own mask over the full norms array.
    norms = store.array("norms")[:]
    mask = store.outlier_mask(norms)
    assert np.array_equal(mask[f["row"], f["slot"]], f["category"] == OUTLIER)
    assert int(mask.sum()) == items.counts["outlier"] == 640  # exactly the planted 2%
    assert (f["category"] == NORMAL).sum() == (f["category"] == OUTLIER).sum()
    # [CLS] and registers are never patch tokens.
    assert f["slot"].min() >= store.geometry.prefix
    assert np.array_equal(f["slot"] - store.geometry.prefix, f["patch"])
    assert np.all(np.diff(f["row"]) >= 0)
    # Each token at most once.
    assert np.unique(f["row"] * 100 + f["slot"]).size == len(items)


def test_normal_draws_are_seeded_and_spread_over_the_store(store):
    part = Part("train", store, store.ok_rows(), 98.0)
    a = select_tokens(part, normals=None, seed=42).fields
    b = select_tokens(part, normals=None, seed=42).fields
    c = select_tokens(part, normals=None, seed=3).fields
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["row"], c["row"])
    rows = a["row"][a["category"] == NORMAL]
    # Uniform without replacement over 2000 images: every quarter of the store gets some.
    assert all(((rows >= q * 500) & (rows < (q + 1) * 500)).sum() > 100 for q in range(4))


def test_normals_override_is_clamped(store):
    part = Part("train", store, store.ok_rows()[:10], 98.0)
    items = select_tokens(part, normals=10_000, seed=0)
    assert items.counts["normal"] == items.counts["normal_available"] < 10_000


def test_selection_reads_no_token_vector(store, monkeypatch):
    seen = []
    original = Store.array

    def spy(self, name):
        seen.append(name)
        return original(self, name)

    monkeypatch.setattr(Store, "array", spy)
    part = Part("train", store, store.ok_rows(), 98.0)
    select_tokens(part, normals=None, seed=0)
    select_images_with_outliers(part, seed=0, max_images=None, has_cls_token=True)
    assert "tokens" not in seen and set(seen) <= {"norms", "label"}


def test_classify_draws_one_outlier_and_one_normal_per_image(store):
    part = Part("train", store, store.ok_rows(), 98.0)
    items = select_images_with_outliers(part, seed=42, max_images=None, has_cls_token=True)
    f = items.fields
    mask = store.outlier_mask(store.array("norms")[:])
    assert mask[f["row"], f["outlier_slot"]].all()
    assert not mask[f["row"], f["normal_slot"]].any()
    assert np.array_equal(np.unique(f["row"]), f["row"])
    assert items.counts["eligible"] == int(mask.any(axis=1).sum())
    capped = select_images_with_outliers(part, seed=42, max_images=50, has_cls_token=True)
    assert len(capped) == 50 and set(capped.rows) <= set(f["row"])
