"""Planted stores for the probe tests, written through cache's writer (no model)."""

from __future__ import annotations

import pytest
import torch

from vitreg.cache import Geometry
from vitreg.testing import write_planted_store

#: 4 x 4 grid of 8 px patches, 2 registers, D = 48: small enough for CPU tests.
GEOMETRY = Geometry(registers=2, grid=(4, 4), dim=48, depth=2, img_size=32)

#: Optimiser settings for plumbing tests on the small planted stores: one
#: learning rate, no minimum step count, 12 epochs (the defaults, a grid of
#: five rates and at least 4,000 steps, are what tests/test_probe_fidelity.py
#: checks against an oracle).
FAST = {"lr": 1e-2, "batch_size": 64, "epochs": 12, "min_steps": 0}

#: Reconstruction is compared with sklearn's Ridge to 25%: the default grid and steps.
FAST_RECONSTRUCT = {"batch_size": 64}


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """The probes here are tiny: one intra-op thread beats two on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> str:
    """2000 images, 16 patches each, exactly 2% outlier patch tokens (640)."""
    path = tmp_path_factory.mktemp("planted") / "store.zarr"
    return write_planted_store(str(path), n_images=2000, geometry=GEOMETRY, seed=0)


@pytest.fixture(scope="session")
def planted_val(tmp_path_factory) -> str:
    """Other images of the same planted "model" (same codebooks), for --val."""
    path = tmp_path_factory.mktemp("planted_val") / "store.zarr"
    return write_planted_store(str(path), n_images=500, geometry=GEOMETRY, seed=1, codes_seed=0)


@pytest.fixture(scope="session")
def sampled(tmp_path_factory) -> str:
    """Planted images kept as K = 8 sampled patch tokens per image."""
    path = tmp_path_factory.mktemp("sampled") / "store.zarr"
    return write_planted_store(str(path), n_images=2000, geometry=GEOMETRY, seed=0,
                               token_mode="sampled:8")


@pytest.fixture(scope="session")
def geometry() -> Geometry:
    return GEOMETRY


@pytest.fixture(scope="session")
def fast() -> dict:
    return dict(FAST)


@pytest.fixture(scope="session")
def fast_reconstruct() -> dict:
    return dict(FAST_RECONSTRUCT)
