"""`vitreg study init`: write a plan, the paper's (every model of the study) or
one of your own (`--models`), as TOML text."""

from __future__ import annotations

import json
from typing import Any

from vitreg.core import UsageError

from . import paper
from .stages import analysis_kinds, probe_kinds


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


def paper_models(names: list[str] | None) -> dict[str, tuple]:
    """The paper plan's models, all or those named by the study's names (`DINOv2-S`)."""
    if not names:
        return dict(paper.PAPER_MODELS)
    unknown = [n for n in names if n not in paper.PAPER_MODELS]
    if unknown:
        raise UsageError(f"--paper --models: unknown study model(s) {unknown}; the study's "
                         f"are {', '.join(paper.PAPER_MODELS)}")
    return {n: paper.PAPER_MODELS[n] for n in dict.fromkeys(names)}


def _used(recipes: dict[str, dict], models: dict[str, tuple], slot: int) -> dict[str, dict]:
    wanted = {name for entry in models.values() for name in entry[slot]}
    return {k: v for k, v in recipes.items() if k in wanted}


def _model_entry(name: str, entry: tuple) -> str:
    timm_name, extracts, probes, analyses, used = entry
    text = toml_table("[[model]]", {"name": name, "timm": timm_name, "extract": extracts,
                                    "probe": probes, "analysis": analyses}, used)
    if name in paper.OFFICIAL_HEADS:
        text += (f"# Table 4 (optional): the official linear head, from facebookresearch/dinov2"
                 f"'s releases\n# head = \"/path/to/{paper.OFFICIAL_HEADS[name]}\"\n")
    return text


def paper_plan(*, val: str | None = None, train: str | None = None,
               weights: str = "pretrained", models: list[str] | None = None) -> str:
    """The study's models (all, or `models` by their study names), with what Tables 1-5,
    Figures 1-7 and Appendix A need."""
    chosen = paper_models(models)
    extracts = _used(paper.EXTRACTS, chosen, 1)
    probes = _used(paper.PROBES, chosen, 2)
    if any(n in paper.OFFICIAL_HEADS for n in chosen):
        probes["head"] = paper.PROBES["head"]
    parts = ["# vitreg study plan: the reproducibility study of 'Vision Transformers Need "
             "Registers'.\n",
             toml_table("[study]", {"weights": weights, "seed": 42, "batch_size": 256,
                                    "precision": "auto", "workers": 8}),
             toml_table("[data]", _data(val, train)),
             toml_table("[resources]", paper.RESOURCES, "SLURM jobs (--executor slurm)"),
             *_recipes(extracts, probes, _used(paper.ANALYSES, chosen, 3)),
             toml_table("[report]", {"store": "val"})]
    parts += [_model_entry(name, entry) for name, entry in chosen.items()]
    return "\n".join(parts)


def expand_models(patterns: list[str]) -> list[str]:
    """timm names, each pattern with `*`, `?` or `[` expanded by timm (`list_pretrained`
    when it names a tag, else `list_models`); a pattern matching nothing is refused."""
    import fnmatch

    import timm

    names: list[str] = []
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            names.append(pattern)
            continue
        found = (timm.list_pretrained(pattern) if "." in pattern
                 else timm.list_models(pattern))
        found = [n for n in found if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise UsageError(f"--models {pattern!r} matches no timm model"
                             + ("" if "." in pattern else " (add a tag, e.g. '.lvd142m', to "
                                "match pretrained names)"))
        names += found
    return list(dict.fromkeys(names))


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
              for k in probe_kinds()}
    analyses = {k: {"kind": k, "store": "val"} for k in analysis_kinds()}
    parts = ["# vitreg study plan\n",
             toml_table("[study]", {"weights": weights, "seed": 42, "batch_size": 32}),
             toml_table("[data]", {"val": val, **({"train": train} if train else {})}),
             toml_table("[resources]", paper.RESOURCES, "SLURM jobs (--executor slurm)"),
             *_recipes(extracts, probes, analyses), toml_table("[report]", {"store": "val"})]
    models = expand_models(models)
    short = [m.split(".")[0] for m in models]
    for model, name in zip(models, short):
        parts.append(toml_table("[[model]]", {
            "name": name if short.count(name) == 1 else model.replace(".", "-"), "timm": model,
            "extract": list(extracts), "probe": list(probes), "analysis": list(analyses)}))
    return "\n".join(parts)
