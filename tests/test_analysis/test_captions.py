"""Figure captions name what a figure shows and, for a per-store figure, its store."""

from __future__ import annotations

import json

import pytest

from vitreg.analysis.presentation import caption_for


@pytest.mark.parametrize(("stem", "shows"), [
    ("blocks_qkv_2_n01440764_tench", "q, k, v and output norm maps of every block"),
    ("blocks_11_n01440764_tench", "patch-token norm map after every block"),
])
def test_a_per_store_figure_names_its_store_and_image(tmp_path, stem, shows):
    png = tmp_path / f"{stem}.png"
    png.write_bytes(b"")
    png.with_suffix(".json").write_text(json.dumps({"label": "vit_large · L-hires"}))
    assert caption_for(png) == f"vit_large · L-hires, image n01440764_tench: {shows} " \
        f"(study {'A.2' if 'qkv' in stem else 'Fig. 7'})."


def test_a_per_image_figure_names_its_image(tmp_path):
    caption = caption_for(tmp_path / "qkv_n01440764_tench.png")
    assert caption.startswith("Image n01440764_tench: norms of q, k and v")
