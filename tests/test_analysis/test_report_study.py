"""The study's tables (issue #25): our row beside the study's whenever the study has
the number, every difference from the study's setup marked in the row, a section on
the choices the study leaves open, and study rows only for exact tagged timm names."""

from __future__ import annotations

import html
import json
import re

from vitreg.analysis import run_report

from .test_report import _probe

POSITION = {"normal": {"top1": 0.5, "distance": 0.9}, "outlier": {"top1": 0.1, "distance": 3}}


def _with_setup(path, kind, metrics, *, model="vit_small_patch14_dinov2.lvd142m", tag=None,
                weights="pretrained", img_size=224, preset="timm", tokens="all",
                protocol="study", val=True, truncation=None, **extra_metrics):
    _probe(path, kind, metrics, model=model, weights=weights)
    data = json.loads(path.read_text())
    store = {"model": model, "pretrained_cfg": tag or model, "weights": weights,
             "img_size": img_size, "preprocessing_preset": preset, "precision": "bf16",
             "token_mode": tokens}
    data["val_store"] = {"url": "val.zarr"} if val else None
    data["setup"] = {"train_store": store, "val_store": store if val else None,
                     "selection": {"protocol": protocol, "grid_chosen_on": None,
                                   "early_stopping_on": "reported split"},
                     "truncation": truncation}
    path.write_text(json.dumps(data))
    return str(path)


def _row_of(text: str, start: str) -> str:
    """The text of the table row whose first cell starts with `start`."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", text):
        if html.unescape(re.sub("<[^>]+>", "|", row)).lstrip("|").startswith(start):
            return html.unescape(re.sub("<[^>]+>", "|", row))
    raise AssertionError(f"no row starting {start!r}")


def _report(planted, tmp_path, probes) -> str:
    return run_report([planted.url], out=tmp_path / "rep", probes=probes, images=0,
                      top=1).read_text()


def test_study_row_beside_ours_on_another_setup_with_each_difference_marked(planted, tmp_path):
    path = _with_setup(tmp_path / "p.json", "position", POSITION, weights="random",
                       img_size=518, tokens="sampled:32", protocol="heldout", val=False,
                       truncation={"train": {"sampled_k_half": 16, "truncated_images": 5,
                                             "images": 100}})
    text = _report(planted, tmp_path, [path])
    ours = _row_of(text, "ours: vit_small_patch14_dinov2.lvd142m")
    assert "tokens sampled:32 (5 of 100 images with more outliers than K/2)" in ours
    for mark in ("weights random (study: pretrained)", "518 px (study: 224)",
                 "tokens sampled:32: 5 of 100 images had more outliers than K/2",
                 "--protocol heldout", "reported on a held-out part of the training store"):
        assert mark in ours, (mark, ours)
    study = _row_of(text, "study: DINOv2-S")
    assert "28.05" in study and "19.18" in study and "1.07" in study and "1.27" in study


def test_a_sampled_store_that_kept_every_outlier_is_the_studys_setup(planted, tmp_path):
    path = _with_setup(tmp_path / "p.json", "position", POSITION, tokens="sampled:32",
                       truncation={"train": {"sampled_k_half": 16, "truncated_images": 0,
                                             "images": 100}})
    ours = _row_of(_report(planted, tmp_path, [path]), "ours:")
    assert "none: the study's setup" in ours


def test_study_rows_match_only_exact_tagged_names(planted, tmp_path):
    untagged = _with_setup(tmp_path / "a.json", "position", POSITION,
                           model="vit_base_patch16_clip_224",
                           tag="vit_base_patch16_clip_224.laion2b_ft_in12k_in1k")
    text = _report(planted, tmp_path, [untagged])
    assert "study: OpenCLIP-B" not in text and "6.76" not in text
    tagged = _with_setup(tmp_path / "b.json", "position", POSITION,
                         model="vit_base_patch16_clip_224.laion2b")
    assert "6.76" in _row_of(_report(planted, tmp_path, [tagged]), "study: OpenCLIP-B")


def test_table4_marks_preprocessing_and_deviations_are_explained(planted, tmp_path):
    head = _with_setup(tmp_path / "h.json", "linear", {"head": {"top1": 0.8}})
    text = _report(planted, tmp_path, [head])
    ours = _row_of(text, "ours:")
    assert "preprocessing timm (study: dinov2-linear" in ours
    assert "81.15" in _row_of(text, "study: DINOv2-S")
    section = text[text.index("Deviations from the study"):]
    for topic in ("soft-argmax", "one head per token category", "standardised",
                  "98th percentile", "Table 2 unit", "--protocol study"):
        assert topic in html.unescape(section), topic


def test_sampled_stores_show_how_many_images_had_more_outliers_than_k_half(tmp_path):
    import numpy as np

    from tests.test_probe.conftest import GEOMETRY
    from vitreg.analysis.report import sampled_html
    from vitreg.cache import open_store
    from vitreg.testing import Planted, write_planted_store

    url = write_planted_store(str(tmp_path / "s.zarr"), n_images=200, geometry=GEOMETRY,
                              planted=Planted(outlier_fraction=0.15), token_mode="sampled:4",
                              with_pixels=False)
    store = open_store(url)
    norms = store.array("norms")[:][:, GEOMETRY.prefix:]
    per_image = (norms > np.percentile(norms, 98)).sum(1)
    truncated = int((per_image > 2).sum())
    assert truncated > 0
    text = html.unescape(sampled_html([store], ["s"]))
    cells = re.findall(r"<td>([^<]*)</td>", text)
    assert cells == ["s", "4", "200", str(truncated), str(int(np.maximum(per_image - 2, 0).sum())),
                     str(int(per_image.sum())), str(int(per_image.max()))]
    full = write_planted_store(str(tmp_path / "f.zarr"), n_images=20, geometry=GEOMETRY)
    assert sampled_html([open_store(full)], ["f"]) == ""


def test_a_result_read_at_a_middle_block_is_marked(planted, tmp_path):
    path = _with_setup(tmp_path / "p.json", "position", POSITION)
    data = json.loads((tmp_path / "p.json").read_text())
    for store in (data["setup"]["train_store"], data["setup"]["val_store"]):
        store.update(block=6, depth=12)
    (tmp_path / "p.json").write_text(json.dumps(data))
    ours = _row_of(_report(planted, tmp_path, [path]), "ours:")
    assert "tokens of block 6 of 12 (study: the last block)" in ours
