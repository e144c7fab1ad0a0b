"""Each table's setup in a plan, and where it differs from the study's: what
`study run --dry-run` prints before any work (the report marks the same
differences on the results, from their recorded setups)."""

from __future__ import annotations

from typing import Any

from vitreg.analysis.study import (
    TABLE1,
    TABLE2,
    TABLE3,
    TABLE4,
    TABLE5,
    TABLE_OF,
    setup_differences,
    study_name,
)

from .plan import Plan, model_probes

#: Table number -> the study's numbers (which models it reports).
STUDY_NUMBERS = {1: TABLE1, 2: TABLE2, 3: TABLE3, 4: TABLE4, 5: TABLE5}


def planned_result(plan: Plan, model: dict[str, Any],
                   probe: str) -> tuple[int | None, dict[str, Any]]:
    """(table, a result-shaped record of the setup a planned probe will have); the
    table is None for a probe kind that fills none of the study's."""
    recipe = plan.probe[probe]
    options = recipe.get("options", {})
    table = 4 if probe == "head" or options.get("head") else TABLE_OF.get(recipe["kind"])
    extract = plan.extract[recipe["train"]]
    store = {"model": model["timm"], "pretrained_cfg": None,
             "weights": model.get("weights", plan.study.get("weights", "random")),
             "img_size": extract.get("img_size"),
             "preprocessing_preset": extract.get("preprocess", "timm"),
             "precision": plan.study.get("precision"), "token_mode": extract.get("tokens", "all")}
    linear = recipe["kind"] == "linear"
    protocol = options.get("protocol", "heldout")
    selection = {"protocol": "no selection" if linear else protocol,
                 "grid_chosen_on": None,
                 "early_stopping_on": None if linear else
                 ("reported split" if protocol == "study" else "held-out training images")}
    reported = recipe.get("val") or (table == 4 and extract.get("split") == "val")
    # A sampled store is judged on its truncation, which only the run counts.
    truncation = {"planned": {"truncated_images": 0}} \
        if str(store["token_mode"]).startswith("sampled") else None
    return table, {"setup": {"train_store": store, "selection": selection,
                             "truncation": truncation},
                   "val_store": {"planned": True} if reported else None}


def _sampled_note(token_mode: str) -> str:
    k = int(token_mode.split(":")[1])
    return (f"; {token_mode} is the study's setup on every image with at most {k // 2} "
            "outliers (the run counts the others)")


def table_setup_lines(plan: Plan) -> list[str]:
    """One line per planned probe that fills a table of the study."""
    lines = []
    for model in plan.models:
        for probe in model_probes(model):
            table, result = planned_result(plan, model, probe)
            if table is None:
                continue
            store = result["setup"]["train_store"]
            setup = (f"{store['weights']}, {store['img_size']} px, "
                     f"{store['preprocessing_preset']}, tokens {store['token_mode']}, "
                     f"protocol {result['setup']['selection']['protocol']}, trained on "
                     f"{plan.probe[probe]['train']}, reported on "
                     f"{plan.probe[probe].get('val') or plan.probe[probe]['train']}")
            name = study_name(model["timm"])
            if name not in STUDY_NUMBERS[table]:
                lines.append(f"Table {table} {model['name']} ({probe}): {setup}; the study "
                             "reports no number for this model (no study row)")
                continue
            diffs = setup_differences(result, table)
            verdict = "differs: " + "; ".join(diffs) if diffs else "as the study's"
            note = (_sampled_note(store["token_mode"])
                    if str(store["token_mode"]).startswith("sampled") else "")
            lines.append(f"Table {table} {model['name']} ({probe}): {setup}; {verdict}{note}")
    return lines

