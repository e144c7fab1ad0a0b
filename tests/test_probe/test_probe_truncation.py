"""A `sampled:K` store is the study's setup for Tables 1-3 on every image whose
outliers all sit among its K/2 kept highest norms (issue #25). Planted stores where
the answer is known: 15% of the patches are outliers, so many images hold more than
K/2 = 3 of 16, and a full store of the same images to compare with."""

from __future__ import annotations

import numpy as np
import pytest

from vitreg.cache import open_store
from vitreg.probe import run_probe
from vitreg.probe.select import Part, select_images_with_outliers, select_tokens
from vitreg.testing import Planted, write_planted_store

from .conftest import GEOMETRY

PLANTED = Planted(outlier_fraction=0.15)
PERCENTILE = 85.0
K = 6


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("truncation")
    return {mode: write_planted_store(str(folder / f"{mode}.zarr"), n_images=240,
                                      geometry=GEOMETRY, planted=PLANTED, seed=3,
                                      token_mode=mode, with_pixels=False)
            for mode in ("all", f"sampled:{K}")}


@pytest.fixture(scope="module")
def truth(stores) -> dict[str, np.ndarray]:
    """Each image's outliers, from the full store's norms with numpy's percentile."""
    norms = open_store(stores["all"]).array("norms")[:][:, GEOMETRY.prefix:]
    outlier = norms > np.percentile(norms, PERCENTILE)
    return {"outlier": outlier, "count": outlier.sum(1)}


def _part(url: str) -> Part:
    store = open_store(url)
    return Part("train", store, store.ok_rows(), PERCENTILE)


def test_truncated_images_are_counted_from_the_norms(stores, truth):
    counts = select_tokens(_part(stores[f"sampled:{K}"]), normals=0, seed=42).counts
    expected = int((truth["count"] > K // 2).sum())
    assert 20 < expected < 200  # the planted store has both kinds of image
    assert counts["truncated_images"] == expected
    assert counts["sampled_k_half"] == K // 2
    assert counts["outliers_total"] == int(truth["count"].sum())
    assert counts["outliers_not_kept"] == int(np.maximum(truth["count"] - K // 2, 0).sum())
    full = select_tokens(_part(stores["all"]), normals=0, seed=42).counts
    assert full["truncated_images"] == 0 and full["outliers_not_kept"] == 0


def test_sampled_store_holds_every_outlier_of_an_untruncated_image(stores, truth):
    items = select_tokens(_part(stores[f"sampled:{K}"]), normals=0, seed=42)
    row, patch = items.fields["row"], items.fields["patch"]
    for image in range(truth["count"].size):
        got = set(patch[row == image].tolist())
        want = set(np.flatnonzero(truth["outlier"][image]).tolist())
        if truth["count"][image] <= K // 2:
            assert got == want, image  # the study's setup exactly
        else:
            assert len(got) == K // 2 and got < want, image  # its K/2 highest only


def test_table3_draws_the_same_outlier_as_a_full_store_when_all_are_kept(stores, truth):
    picks = {}
    for mode, url in stores.items():
        part = _part(url)
        items = select_images_with_outliers(part, seed=42, max_images=None, has_cls_token=True)
        slot = items.fields["outlier_slot"]
        if mode == "all":
            patch = slot - GEOMETRY.prefix
        else:
            index = part.store.array("sampled/index")[:]
            patch = index[items.fields["row"], slot]
        picks[mode] = dict(zip(items.fields["row"].tolist(), patch.tolist()))
        assert items.counts["truncated_images"] == int(
            (truth["count"][items.fields["row"]] > (K // 2 if mode != "all" else 16)).sum())
    kept = [r for r in picks["all"] if truth["count"][r] <= K // 2]
    assert len(kept) > 50
    assert all(picks["all"][r] == picks[f"sampled:{K}"][r] for r in kept)
    # and a full store's draw is uniform over each image's outliers
    assert all(truth["outlier"][r, picks["all"][r]] for r in picks["all"])


def test_the_result_records_the_truncation(stores):
    r = run_probe("classify", stores[f"sampled:{K}"], percentile=PERCENTILE, lr=0.01, epochs=1,
                  batch_size=64, min_steps=0, protocol="study")
    assert r["counts"]["train"]["truncated_images"] > 0
    assert r["counts"]["train"]["sampled_k_half"] == K // 2
