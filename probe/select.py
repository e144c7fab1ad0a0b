"""Choose what a probe reads, as indices only: the image split, and the
normal / outlier patch tokens of each image, from `norms` chunk by chunk.

No token vector is read here; `stream.py` gathers the chosen ones afterwards.
Every draw is seeded per chunk (by the chunk's first row), so a selection
does not depend on the order chunks are visited in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from vitreg.cache import Store
from vitreg.cache.names import LABEL, NORMS, SAMPLED_INDEX, SAMPLED_TOKENS, TOKENS

from .registry import ProbeError

NORMAL, OUTLIER, NO_CATEGORY = 0, 1, -1

#: numpy's hypergeometric sampler takes fewer than 1e9 good and bad items.
_HYPERGEOMETRIC_LIMIT = 10**9 - 1

# Salts that keep the seeded streams of different draws apart.
_SALT_NORMALS, _SALT_COUNTS, _SALT_CLASSIFY, _SALT_CAP, _SALT_SELECT = 101, 102, 103, 104, 105


@dataclass
class Part:
    """One side of the split: a store, the ok rows of it that are used, its threshold."""

    name: str
    store: Store
    rows: np.ndarray
    percentile: float
    threshold: float | None = None

    @property
    def images(self) -> int:
        return int(self.rows.size)


@dataclass
class Items:
    """Selected items, sorted by store row: one token (or one image) each.

    `fields` holds per-item columns: always `row`; `slot` (index along the
    token axis of the array the tokens come from), `patch` (grid position),
    `category` (NORMAL, OUTLIER or NO_CATEGORY), `label`, and probe-specific ones.
    """

    fields: dict[str, np.ndarray]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        return self.fields["row"]

    def __len__(self) -> int:
        return int(self.rows.size)


# -- the split -----------------------------------------------------------------
def split_rows(
    store: Store, val_store: Store | None, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Train rows of `store`, and val rows of `store` when there is no `val_store`.

    The split is by image: a seeded permutation of the ok rows, `val_fraction`
    of them (at least one, at most all but one) held out.
    """
    ok = store.ok_rows()
    if ok.size == 0:
        raise ProbeError(f"store {store.url} has no ok rows (counts: {store.counts()})")
    if val_store is not None:
        if val_store.ok_rows().size == 0:
            raise ProbeError(f"--val store {val_store.url} has no ok rows")
        return ok, None, {"mode": "val_store", "train_images": int(ok.size),
                          "val_images": int(val_store.ok_rows().size)}
    if not 0.0 < val_fraction < 1.0:
        raise ProbeError(f"--val-fraction must be between 0 and 1, not {val_fraction}")
    if ok.size < 2:
        raise ProbeError(
            f"store {store.url} has {ok.size} ok image; a split by image needs at least 2 "
            "(or pass --val STORE)"
        )
    n_val = int(np.clip(round(val_fraction * ok.size), 1, ok.size - 1))
    perm = np.random.default_rng(seed).permutation(ok.size)
    val = np.sort(ok[perm[:n_val]])
    train = np.sort(ok[perm[n_val:]])
    return train, val, {"mode": "fraction", "val_fraction": val_fraction, "seed": seed,
                        "train_images": int(train.size), "val_images": int(val.size)}


def split_items_by_image(items: Items, fraction: float, seed: int) -> tuple[Items, Items]:
    """(fit, select): `items` split by image, `fraction` of the images (at least one, at
    most all but one) held out to choose epochs and hyperparameters; both stay sorted."""
    images = np.unique(items.rows)
    if images.size < 2:
        raise ProbeError(f"{images.size} training image(s): choosing the epoch or the learning "
                         "rate on held-out training images needs at least 2; pass a single "
                         "--lr with --protocol study, or more images")
    n_held = int(np.clip(round(fraction * images.size), 1, images.size - 1))
    held = np.random.default_rng([seed, _SALT_SELECT]).permutation(images)[:n_held]
    mask = np.isin(items.rows, held)
    pick = lambda keep: Items({k: v[keep] for k, v in items.fields.items()},  # noqa: E731
                              counts=items.counts)
    return pick(~mask), pick(mask)


# -- reading rows chunk by chunk -------------------------------------------------
# -- candidate patch tokens, chunk by chunk ------------------------------------
@dataclass
class Candidates:
    """The patch tokens of one chunk's selected rows that a probe may pick."""

    start: int  # first row of the chunk: the seed of its draws
    rows: np.ndarray  # (n,)
    labels: np.ndarray  # (n,)
    slot: np.ndarray  # (n, C) index along the token axis of the token array
    patch: np.ndarray  # (n, C) grid position
    outlier: np.ndarray  # (n, C) bool: the outlier candidates
    valid: np.ndarray  # (n, C) bool
    normal: np.ndarray  # (n, C) bool: the normal candidates, a uniform draw of the image's
    n_outliers: np.ndarray  # (n,) outliers of each image among all its patch tokens
    kept: int | None  # sampled stores: K/2, the outliers an image can keep; None: all kept



def token_source(store: Store) -> str:
    """The array patch tokens are read from (`Store.token_source`): `tokens`,
    else `sampled/tokens`."""
    source = store.token_source()
    if source is not None:
        return source
    raise ProbeError(
        f"store {store.url} holds no patch tokens (extracted with --tokens none?); this probe "
        "needs a store extracted with --tokens all or --tokens sampled:K"
    )


def candidates(part: Part) -> Iterator[Candidates]:
    """Patch tokens of the part's rows with their outlier flag, one chunk at a time.

    Full stores offer every patch token. Sampled stores offer as outliers the
    outliers of the first half of `sampled/index` (the K/2 highest norms) and
    as normal tokens the normal ones of its second half (drawn at random), so
    that normal tokens are a uniform draw of the image's normal tokens, as in
    a full store, and not biased to its highest norms. [CLS] and registers are
    never candidates. The flag follows DESIGN.md's rule with the part's
    threshold (one per model, computed once by `cache`).
    """
    store, geometry = part.store, part.store.geometry
    if part.threshold is None:
        part.threshold = store.threshold(part.percentile)
    source = token_source(store)
    names = [NORMS, LABEL] + ([SAMPLED_INDEX] if source == SAMPLED_TOKENS else [])
    prefix, patches = geometry.prefix, geometry.patches
    for batch in store.batches(names, rows=part.rows):
        n = batch["row"].size
        if source == TOKENS:
            patch = np.broadcast_to(np.arange(patches, dtype=np.int32), (n, patches))
            slot = patch + prefix
            valid = np.ones((n, patches), dtype=bool)
            top = drawn = valid
        else:
            patch = batch[SAMPLED_INDEX].astype(np.int32)
            valid = (patch >= 0) & (patch < patches)
            patch = np.where(valid, patch, 0)
            slot = np.broadcast_to(np.arange(patch.shape[1], dtype=np.int32), patch.shape)
            top = np.broadcast_to(slot < patch.shape[1] // 2, patch.shape)
            drawn = ~top
        norms = np.take_along_axis(batch[NORMS], patch + prefix, axis=1)
        above = (norms > part.threshold) & valid
        # `norms` holds every patch's norm, sampled or not: each image's true outlier count
        n_outliers = (batch[NORMS][:, prefix:prefix + patches] > part.threshold).sum(1)
        yield Candidates(
            start=batch["chunk_start"],
            rows=batch["row"], labels=batch[LABEL], slot=slot, patch=patch,
            outlier=above & top, valid=valid, normal=valid & ~above & drawn,
            n_outliers=n_outliers, kept=None if source == TOKENS else patch.shape[1] // 2,
        )


def _hypergeometric(rng: np.random.Generator, good: int, bad: int, draws: int) -> int:
    """How many of `draws` items drawn without replacement are among the `good` ones."""
    if draws <= 0 or good <= 0:
        return 0
    if bad <= 0:
        return draws
    if good > _HYPERGEOMETRIC_LIMIT or bad > _HYPERGEOMETRIC_LIMIT:
        # Beyond numpy's range the binomial is an excellent approximation.
        return int(min(good, rng.binomial(draws, good / (good + bad))))
    return int(rng.hypergeometric(good, bad, draws))


def select_tokens(part: Part, *, normals: int | None, seed: int) -> Items:
    """All outlier patch tokens of the part, and normal ones drawn to match their count.

    Two passes over `norms`: the first counts, the second draws the normal
    tokens uniformly without replacement (a hypergeometric share per chunk,
    then a seeded choice inside it), so memory holds only the selected indices.
    `normals` overrides the matched count.
    """
    n_out, n_norm, per_image, k_half = 0, [], [], None
    for cand in candidates(part):
        n_out += int(cand.outlier.sum())
        n_norm.append(int(cand.normal.sum()))
        per_image.append(cand.n_outliers)
        k_half = cand.kept
    total_normal = int(sum(n_norm))
    wanted = n_out if normals is None else int(normals)
    take = min(wanted, total_normal)
    if take + n_out == 0:
        raise ProbeError(_nothing_to_probe(part, normals))

    share_rng = np.random.default_rng([seed, _SALT_COUNTS])
    left_items, left_draws = total_normal, take
    parts: list[dict[str, np.ndarray]] = []
    for cand, m in zip(candidates(part), n_norm):
        k = _hypergeometric(share_rng, m, left_items - m, left_draws)
        left_items, left_draws = left_items - m, left_draws - k
        parts.append(_chunk_items(cand, m, k, seed))
    fields = _concat(parts, ("row", "slot", "patch", "category"))
    return Items(fields, counts={
        "images": part.images, "outlier": n_out, "normal": take,
        "normal_available": total_normal, "normal_wanted": wanted,
        **truncation(np.concatenate(per_image), k_half),
    })


def _chunk_items(cand: Candidates, m: int, k: int, seed: int) -> dict[str, np.ndarray]:
    """One chunk's items: every outlier token and `k` of its `m` normal tokens drawn
    with the chunk's own seed, sorted by row, then slot."""
    r_norm, c_norm = np.nonzero(cand.normal)
    if k:
        pick = np.random.default_rng([seed, _SALT_NORMALS, cand.start]).choice(
            m, size=k, replace=False
        )
        r_norm, c_norm = r_norm[pick], c_norm[pick]
    else:
        r_norm, c_norm = r_norm[:0], c_norm[:0]
    r_out, c_out = np.nonzero(cand.outlier)
    r = np.concatenate([r_out, r_norm])
    c = np.concatenate([c_out, c_norm])
    order = np.lexsort((cand.slot[r, c], r))
    r, c = r[order], c[order]
    return {
        "row": cand.rows[r].astype(np.int64),
        "slot": cand.slot[r, c].astype(np.int32),
        "patch": cand.patch[r, c].astype(np.int32),
        "category": np.where(cand.outlier[r, c], OUTLIER, NORMAL).astype(np.int8),
    }


def _nothing_to_probe(part: Part, normals: int | None) -> str:
    msg = (
        f"the {part.name} images of {part.store.url} have no outlier token (no patch-token "
        f"norm above the {part.percentile:g}th-percentile threshold {part.threshold:.6g})"
    )
    if normals is None:
        return msg + ("; normal tokens are drawn to match the outlier count, so there is "
                      "nothing to probe. Pass --normals N to probe N normal tokens anyway")
    return msg + " and no normal token either"


def _concat(parts: list[dict[str, np.ndarray]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not parts:
        raise ProbeError("no rows selected")
    return {name: np.concatenate([p[name] for p in parts]) for name in names}


def _random_pick(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """For each row of `mask`, a uniformly random column where it is True (rows need one)."""
    keys = rng.random(mask.shape)
    keys[~mask] = -1.0
    return keys.argmax(axis=1)


def _pick_slot(rng: np.random.Generator, cand: Candidates, mask: np.ndarray,
               patches: int) -> np.ndarray:
    """For each row, the slot of a uniformly random True of `mask`, drawn over the grid
    positions: a sampled store that kept every outlier of an image picks the same
    outlier as a full store of the same images does."""
    n = mask.shape[0]
    r, c = np.nonzero(mask)
    position = cand.patch[r, c]
    on_grid = np.zeros((n, patches), dtype=bool)
    on_grid[r, position] = True
    slot_of = np.zeros((n, patches), dtype=np.int64)
    slot_of[r, position] = cand.slot[r, c]
    return slot_of[np.arange(n), _random_pick(rng, on_grid)]


def select_images_with_outliers(
    part: Part, *, seed: int, max_images: int | None, has_cls_token: bool
) -> Items:
    """Labelled images with at least one outlier (and one normal) patch token.

    Per image: one random normal and one random outlier patch token (seeded),
    and the [CLS] slot. At most `max_images` images, a seeded choice.
    """
    parts: list[dict[str, np.ndarray]] = []
    seen = unlabelled = no_outlier = 0
    patches, k_half = part.store.geometry.patches, None
    for cand in candidates(part):
        seen += cand.rows.size
        labelled = cand.labels >= 0
        has_out = cand.outlier.any(axis=1)
        has_norm = cand.normal.any(axis=1)
        unlabelled += int((~labelled).sum())
        no_outlier += int((labelled & ~(has_out & has_norm)).sum())
        keep = np.flatnonzero(labelled & has_out & has_norm)
        if keep.size == 0:
            continue
        rng = np.random.default_rng([seed, _SALT_CLASSIFY, cand.start])
        sub, k_half = _rows_of(cand, keep), cand.kept
        parts.append({
            "n_outliers": sub.n_outliers.astype(np.int32),
            "row": cand.rows[keep].astype(np.int64),
            LABEL: cand.labels[keep].astype(np.int64),
            "outlier_slot": _pick_slot(rng, sub, sub.outlier, patches).astype(np.int32),
            "normal_slot": _pick_slot(rng, sub, sub.normal, patches).astype(np.int32),
            "category": np.full(keep.size, NO_CATEGORY, np.int8),
        })
    if not parts:
        raise ProbeError(
            f"none of the {seen} {part.name} images of {part.store.url} has a label and an "
            f"outlier token ({unlabelled} unlabelled, {no_outlier} without an outlier above "
            f"the {part.percentile:g}th-percentile threshold {part.threshold:.6g})"
        )
    fields = _concat(parts, ("row", LABEL, "outlier_slot", "normal_slot", "category",
                             "n_outliers"))
    eligible = fields["row"].size
    if max_images is not None and eligible > max_images:
        rng = np.random.default_rng([seed, _SALT_CAP])
        keep = np.sort(rng.choice(eligible, size=max_images, replace=False))
        fields = {k: v[keep] for k, v in fields.items()}
    return Items(fields, counts={
        "images": part.images, "eligible": eligible, "used": int(fields["row"].size),
        "unlabelled": unlabelled, "without_outlier": no_outlier, "has_cls_token": has_cls_token,
        **truncation(fields["n_outliers"], k_half),
    })


def truncation(n_outliers: np.ndarray, k_half: int | None) -> dict[str, int | None]:
    """How far a sampled store's kept tokens fall short of every outlier of the images.

    A `sampled:K` store keeps the K/2 highest-norm patch tokens of each image, so it
    holds every outlier of an image with at most K/2 of them: on such images it is the
    study's setup (all tokens) for Tables 1-3. `n_outliers` (each image's count among
    all its patches) comes from `norms`, which every store holds in full.
    """
    kept = n_outliers if k_half is None else np.minimum(n_outliers, k_half)
    return {"sampled_k_half": k_half,
            "truncated_images": int((n_outliers > kept).sum()),
            "outliers_total": int(n_outliers.sum()),
            "outliers_not_kept": int((n_outliers - kept).sum())}


def _rows_of(cand: Candidates, keep: np.ndarray) -> Candidates:
    """The candidates of the rows `keep` only."""
    slot = np.broadcast_to(cand.slot, cand.patch.shape)[keep]
    return Candidates(start=cand.start, rows=cand.rows[keep], labels=cand.labels[keep],
                      slot=slot, patch=cand.patch[keep], outlier=cand.outlier[keep],
                      valid=cand.valid[keep], normal=cand.normal[keep],
                      n_outliers=cand.n_outliers[keep], kept=cand.kept)


def select_labelled_images(part: Part) -> Items:
    """Every labelled ok image of the part (the pooled-feature probes)."""
    rows, labels = [], []
    for batch in part.store.batches([LABEL], rows=part.rows):
        keep = batch[LABEL] >= 0
        rows.append(batch["row"][keep])
        labels.append(batch[LABEL][keep])
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if row.size == 0:
        raise ProbeError(
            f"the {part.name} images of {part.store.url} carry no label (all -1); "
            "classification probes need labelled shards (class folders or --synsets)"
        )
    fields = {
        "row": row.astype(np.int64), LABEL: np.concatenate(labels).astype(np.int64),
        "category": np.full(row.size, NO_CATEGORY, np.int8),
    }
    return Items(fields, counts={"images": part.images, "labelled": int(row.size)})
