"""Sample sizes of a classification probe: images and classes seen, and what
its accuracy means when validation classes are missing from training."""

from __future__ import annotations

from typing import Any

import numpy as np


def class_coverage(train_labels: np.ndarray, val_labels: np.ndarray) -> dict[str, int]:
    """Images and distinct classes of each part, and the validation images whose
    class occurs in training (the only ones a trained head can get right)."""
    train_classes = np.unique(train_labels)
    return {
        "train_images": int(len(train_labels)),
        "val_images": int(len(val_labels)),
        "train_classes": int(len(train_classes)),
        "val_classes": int(len(np.unique(val_labels))),
        "val_images_of_seen_classes": int(np.isin(val_labels, train_classes).sum()),
    }


def with_sample_sizes(metrics: dict[str, dict[str, Any]], coverage: dict[str, int],
                      notes: list[str]) -> dict[str, dict[str, Any]]:
    """Each head's metrics with `count` (validation images) and `classes_seen`; no
    accuracy, and a note, when no validation image's class occurs in training."""
    seen = coverage["val_images_of_seen_classes"]
    total = coverage["val_images"]
    if seen == 0:
        notes.append(f"none of the {total} validation image(s) has a class that occurs in "
                     f"training ({coverage['train_classes']} class(es) there): no accuracy "
                     "is reported; give the probe a split or --val store that shares classes")
    elif seen < total:
        notes.append(f"only {seen} of {total} validation image(s) have a class seen in "
                     "training; the others count as errors")
    out = {}
    for head, values in metrics.items():
        values = dict(values)
        if seen == 0:
            values = {k: (None if k.startswith("top") else v) for k, v in values.items()}
        out[head] = {**values, "count": values.get("count", total),
                     "classes_seen": coverage["train_classes"]}
    return out
