"""Opening a stranger's store or checkpoint never runs their code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tests.tiny_models  # noqa: F401
from tests.store_edit import edit_array_meta
from vitreg.cache import Geometry, StoreNotFoundError, UnsafeStoreError, open_store
from vitreg.extract.model import WeightsError, build_model
from vitreg.testing import write_store


class Payload:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        build_model("tiny_dino", weights=str(tmp_path / "evil.pth"))
    assert not marker.exists()
    torch.load(tmp_path / "evil.pth", weights_only=False)  # the payload is live
    assert marker.exists()


def write_v2_pickle_store(folder: Path, marker: Path) -> None:
    """A Zarr v2 store whose one chunk runs `touch marker` when unpickled."""
    import pickle

    (folder / "norms").mkdir(parents=True)
    (folder / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (folder / "norms" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None,
        "fill_value": None, "order": "C", "filters": [{"id": "pickle", "protocol": 5}],
    }))
    chunk = pickle.dumps(np.array([Payload(marker)], dtype=object))
    (folder / "norms" / "0").write_bytes(chunk)


def test_zarr_v2_store_with_pickle_filter_is_never_decoded(tmp_path):
    marker = tmp_path / "pwned"
    write_v2_pickle_store(tmp_path / "v2", marker)
    with pytest.raises(StoreNotFoundError, match="v2"):
        open_store(str(tmp_path / "v2"))
    assert not marker.exists()
    # The payload is live: decoding the chunk (what the pickle filter does) runs it.
    import pickle

    pickle.loads((tmp_path / "v2" / "norms" / "0").read_bytes())
    assert marker.exists()


def _tamper(url: str, array: str, change) -> None:
    edit_array_meta(url, array, change)  # and its consolidated copy


@pytest.mark.parametrize("change, words", [
    (lambda m: m["codecs"].append({"name": "numcodecs.pickle", "configuration": {}}), "pickle"),
    (lambda m: m["codecs"].append({"name": "made-up-codec"}), "made-up-codec"),
    (lambda m: m.update(data_type="object"), "object"),
    (lambda m: m.update(data_type="float64"), "float64"),
])
def test_tampered_metadata_is_refused_before_decoding(tmp_path, change, words):
    geom = Geometry(registers=0, grid=(2, 2), dim=4, depth=1, img_size=28)
    url = write_store(str(tmp_path / "s"), {"norms": np.ones((3, 5), np.float32)}, geometry=geom)
    _tamper(url, "norms", change)
    with pytest.raises(UnsafeStoreError, match=words):
        open_store(url)
