"""Probe fidelity on a planted store as hard as a real one (issue #11).

14 x 14 = 196 positions, D = 64; each normal token holds a weak code of its
position under a stronger linear code of its pixel patch; the top 2% are
outliers with about 10x the norm that hold only a class code
(`vitreg.testing.REALISTIC`). The bar is set by an oracle fitted here on the
same kind of data, independently of the probe: scikit-learn's LDA (position)
and Ridge (pixels) on as many normal tokens of the training images as the
probe gets, scored on normal tokens of held-out images.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import Ridge

from vitreg.cache import open_store
from vitreg.probe import run_probe
from vitreg.testing import REALISTIC, REALISTIC_GEOMETRY, write_planted_store

G = REALISTIC_GEOMETRY
P = G.img_size // G.grid[0]
SKLEARN: dict = {}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("realistic") / "store.zarr")
    return write_planted_store(url, n_images=1000, geometry=G, planted=REALISTIC, seed=0,
                               chunk_rows=64)


@pytest.fixture(scope="module")
def truth(store):
    """Tokens, patches and the outlier mask read straight from the store, and a split."""
    st = open_store(store)
    tokens = st.array("tokens")[:][:, G.prefix:].astype(np.float32)
    norms = st.array("norms")[:][:, G.prefix:]
    pixels = st.array("pixels")[:].astype(np.float32)
    gh, gw = G.grid
    n = tokens.shape[0]
    patches = (pixels.reshape(n, gh, P, gw, P, 3).transpose(0, 1, 3, 2, 4, 5)
               .reshape(n, gh * gw, P * P * 3))
    outlier = norms > np.percentile(norms, 98)
    perm = np.random.default_rng(0).permutation(n)
    return {"tokens": tokens, "patches": patches, "outlier": outlier,
            "train": np.sort(perm[200:]), "val": np.sort(perm[:200])}


def _normals(truth, rows, k, rng):
    r, c = np.nonzero(~truth["outlier"][rows])
    pick = rng.choice(r.size, size=k, replace=False)
    r, c = rows[r[pick]], c[pick]
    return truth["tokens"][r, c], c, truth["patches"][r, c]


@pytest.fixture(scope="module")
def oracle(truth):
    """LDA top-1 and Ridge MSE on normal tokens, the mean-patch MSE of outliers."""
    rng = np.random.default_rng(1)
    k_train = int(truth["outlier"][truth["train"]].sum())  # the probe's default count
    xa, pos_a, pix_a = _normals(truth, truth["train"], k_train, rng)
    xb, pos_b, pix_b = _normals(truth, truth["val"], 800, rng)
    r, c = np.nonzero(truth["outlier"][truth["val"]])
    outlier_pix = truth["patches"][truth["val"][r], c]
    return {
        "top1": LinearDiscriminantAnalysis().fit(xa, pos_a).score(xb, pos_b),
        "mse": float(((Ridge(alpha=1.0).fit(xa, pix_a).predict(xb) - pix_b) ** 2).mean()),
        "mean_patch_mse": float(((pix_a.mean(0) - outlier_pix) ** 2).mean()),
    }


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_position_reaches_the_oracle_on_normal_tokens(store, oracle, backend):
    r = run_probe("position", store, backend=backend, **SKLEARN)
    m = r["metrics"]
    assert oracle["top1"] > 0.9  # the planted code is there to be found
    assert m["normal"]["top1"] >= 0.9 * oracle["top1"], (m["normal"], oracle)
    chance = r["chance_top1"]
    se = np.sqrt(chance * (1 - chance) / m["outlier"]["count"])
    assert m["outlier"]["top1"] <= chance + 4 * se + 0.005, m["outlier"]
    assert m["normal"]["count"] == m["outlier"]["count"] > 500
    assert set(r["curves"]) == {"normal", "outlier"}
    chosen = r["fits"]["normal"]["chosen"]["position"]
    assert ("lr" if backend == "torch" else "C") in chosen and len(chosen["grid"]) >= 3


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_reconstruct_reaches_the_oracle_on_normal_tokens(store, oracle, backend):
    m = run_probe("reconstruct", store, backend=backend)["metrics"]
    assert m["normal"]["mse"] <= 1.5 * oracle["mse"], (m["normal"], oracle)
    # Outliers carry no pixel information: no better than the mean patch.
    assert m["outlier"]["mse"] >= 0.95 * oracle["mean_patch_mse"], (m["outlier"], oracle)
    assert oracle["mean_patch_mse"] > 20 * oracle["mse"]


def test_small_store_gets_enough_steps(store):
    """A pass of ~3,000 tokens is 13 mini-batches: an epoch must be several passes.
    (The study's protocol with one learning rate trains on every training token.)"""
    r = run_probe("position", store, lr="0.01", epochs=5, patience=5, min_steps=1000,
                  protocol="study")
    fit = r["fits"]["normal"]
    assert fit["passes_per_epoch"] == 16  # ceil(1000 / (5 x 13))
    assert r["curves"]["normal"][-1]["steps"] >= 1000
