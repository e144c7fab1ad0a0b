"""`vitreg study init`: write a plan, the paper's (every model of the study) or
one of your own (`--models`), as TOML text."""

from __future__ import annotations

import json
from typing import Any

from vitreg.core import UsageError

from . import paper


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_table(header: str, body: dict[str, Any], comment: str = "") -> str:
    lines = [f"# {comment}"] if comment else []
    lines.append(header)
    lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _data(val: str | None, train: str | None) -> dict[str, str]:
    fill = f"{paper.PLACEHOLDER}: webdataset shards of ImageNet-1k"
    return {"val": val or f"{fill} validation", "train": train or f"{fill} train"}


def _recipes(extracts: dict, probes: dict, analyses: dict) -> list[str]:
    parts = [toml_table(f"[extract.{k}]", v) for k, v in extracts.items()]
    parts += [toml_table(f"[probe.{k}]", v) for k, v in probes.items()]
    parts += [toml_table(f"[analysis.{k}]", v) for k, v in analyses.items()]
    return parts


def paper_plan(*, val: str | None = None, train: str | None = None,
               weights: str = "pretrained") -> str:
    """Every model of the study, with what Tables 1-5, Figures 1-7 and Appendix A need."""
    parts = ["# vitreg study plan: the reproducibility study of 'Vision Transformers Need "
             "Registers'.\n",
             toml_table("[study]", {"weights": weights, "seed": 42, "batch_size": 256,
                                    "precision": "auto", "workers": 8}),
             toml_table("[data]", _data(val, train)),
             toml_table("[resources]", paper.RESOURCES, "SLURM jobs (--executor slurm)"),
             *_recipes(paper.EXTRACTS, paper.PROBES, paper.ANALYSES),
             toml_table("[report]", {"store": "val"})]
    for name, (timm_name, extracts, probes, analyses, used) in paper.PAPER_MODELS.items():
        parts.append(toml_table("[[model]]", {
            "name": name, "timm": timm_name, "extract": extracts, "probe": probes,
            "analysis": analyses}, used))
    return "\n".join(parts)


def own_plan(*, models: list[str], weights: str, val: str, train: str | None = None,
             img_size: int | None = None) -> str:
    """A plan for `models`: val (and train) stores, the four probes, every analysis."""
    if not models or not val:
        raise UsageError("study init needs --paper, or --models and --val")
    size = {"img_size": img_size} if img_size else {}
    extracts = {"val": {"split": "val", **size, "tokens": "all",
                        "with": ["pixels", "blocks", "qkv"]}}
    if train:
        extracts["train"] = {"split": "train", **size, "tokens": "sampled:32"}
    fit = "train" if train else "val"
    probes = {k: {"kind": k, "train": fit, **({"val": "val"} if train else {})}
              for k in paper.PROBES}
    analyses = {k: {"kind": k, "store": "val"} for k in paper.ANALYSES}
    parts = ["# vitreg study plan\n",
             toml_table("[study]", {"weights": weights, "seed": 42, "batch_size": 32}),
             toml_table("[data]", {"val": val, **({"train": train} if train else {})}),
             toml_table("[resources]", paper.RESOURCES, "SLURM jobs (--executor slurm)"),
             *_recipes(extracts, probes, analyses), toml_table("[report]", {"store": "val"})]
    for model in models:
        parts.append(toml_table("[[model]]", {
            "name": model.split(".")[0], "timm": model, "extract": list(extracts),
            "probe": list(probes), "analysis": list(analyses)}))
    return "\n".join(parts)
