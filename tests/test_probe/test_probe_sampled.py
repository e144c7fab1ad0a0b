"""A sampled store (`--tokens sampled:K`) gives the same normal / outlier
statistics as the full store it was sampled from, within sampling error."""

from __future__ import annotations

import numpy as np
import pytest

from vitreg.cache import open_store
from vitreg.probe.select import NORMAL, OUTLIER, Part, select_tokens
from vitreg.testing import REALISTIC, REALISTIC_GEOMETRY, write_planted_store

G = REALISTIC_GEOMETRY


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    common = dict(n_images=400, geometry=G, planted=REALISTIC, seed=0, chunk_rows=64,
                  with_pixels=False)
    full = write_planted_store(str(root / "full.zarr"), **common)
    sampled = write_planted_store(str(root / "sampled.zarr"), token_mode="sampled:16", **common)
    return full, sampled


def _selected_norms(url: str, normals: int | None) -> dict[int, np.ndarray]:
    store = open_store(url)
    items = select_tokens(Part("all", store, store.ok_rows(), 98.0), normals=normals, seed=42)
    norms = store.array("norms")[:]
    values = norms[items.fields["row"], items.fields["patch"] + G.prefix].astype(np.float64)
    return {code: values[items.fields["category"] == code] for code in (NORMAL, OUTLIER)}


def test_sampled_normals_are_a_uniform_draw_of_the_normals(pair):
    full, sampled = pair
    a, b = _selected_norms(full, 2000), _selected_norms(sampled, 2000)
    # Every normal token of the full store: the population the draws estimate.
    store = open_store(full)
    patch = store.array("norms")[:][:, G.prefix:].astype(np.float64)
    population = patch[patch <= np.percentile(patch.astype(np.float32), 98)]
    se = population.std() / np.sqrt(2000)
    for draw in (a[NORMAL], b[NORMAL]):
        assert draw.size == 2000
        assert abs(draw.mean() - population.mean()) < 4 * se, (draw.mean(), population.mean())
    # The first half of a sampled row holds the image's highest norms: not normal draws.
    top_half_mean = np.sort(patch, axis=1)[:, -8:][patch.max(1) > 0].mean()
    assert b[NORMAL].mean() < top_half_mean


def test_sampled_outliers_are_the_full_stores_outliers(pair):
    full, sampled = pair
    a, b = _selected_norms(full, None), _selected_norms(sampled, None)
    # K/2 = 8 holds an image's outliers unless it has more than 8 (about 1% of images).
    assert 0.97 * a[OUTLIER].size <= b[OUTLIER].size <= a[OUTLIER].size
    se = a[OUTLIER].std() / np.sqrt(b[OUTLIER].size)
    assert abs(a[OUTLIER].mean() - b[OUTLIER].mean()) < 4 * se
