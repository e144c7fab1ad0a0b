"""The scikit-learn cross-check: LogisticRegression or Ridge per head, the
regularisation chosen on a held-out part of the training store."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .fit_config import FitResult, TrainConfig
from .linear_heads import Head
from .metrics import MetricSums
from .registry import ProbeError
from .stream import TokenStream
from .tasks import Task

log = logging.getLogger("vitreg.probe")


def _all(stream: TokenStream):
    pieces = list(stream.pieces())
    x = np.concatenate([p.x for p in pieces]).astype(np.float32)
    y = np.concatenate([p.y for p in pieces])
    c = np.concatenate([p.category for p in pieces])
    return x, y, c


def fit_sklearn(
    train: TokenStream, val: TokenStream, task: Task, heads: list[Head], cfg: TrainConfig,
    *, alpha: tuple[float, ...], C: tuple[float, ...], max_iter: int,
    select: TokenStream | None = None,
) -> FitResult:
    """LogisticRegression (classification tasks) or Ridge (reconstruction) per head.

    The regularisation is chosen from the grid `C` (LogisticRegression, fitted from the
    strongest to the weakest, each warm started from the last) or `alpha` (Ridge) on
    `select` (a held-out part of the training store), then the chosen model is scored
    on `val`. Without `select` the grid must hold one value.
    """
    from threadpoolctl import threadpool_limits

    x_tr, y_tr, _ = _all(train)
    x_va, y_va, c_va = _all(val)
    held = _all(select) if select is not None else None
    result = FitResult(model=None, curves=[], best_epoch={}, metrics={}, epochs_run=0)
    # As many BLAS/OpenMP threads as torch uses: oversubscribed, lbfgs ran 9x slower here.
    with threadpool_limits(limits=torch.get_num_threads()):
        for head in heads:
            _fit_sklearn_head(result, head, (x_tr, y_tr), held, (x_va, y_va, c_va), task, cfg,
                              alpha=alpha, C=C, max_iter=max_iter)
    return result


def _fit_sklearn_head(result: FitResult, head: Head, train, held, val, task: Task,
                      cfg: TrainConfig, *, alpha, C, max_iter) -> None:
    """Fit one head over its regularisation grid, choose on `held` (or take the one value),
    record the chosen value's metrics on `val` in `result`."""
    (x_tr, y_tr), (x_va, y_va, c_va) = train, val
    cols = slice(None) if head.columns is None else head.columns
    n_held = 0 if held is None else held[0].shape[0]
    a = x_tr[:, cols]
    b = x_va[:, cols] if held is None else np.concatenate([held[0][:, cols], x_va[:, cols]])
    if cfg.standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(a)
        a, b = scaler.transform(a), scaler.transform(b)
    if task.regression:
        y = y_tr.astype(np.float64)
        task.set_targets(y.mean(0), float(y.std()))
        t = task.target(y_tr, torch.device("cpu")).numpy()
        outs, what = _ridge_path(a, t, b, alpha), "alpha"
    else:
        if np.unique(y_tr).size < 2:
            raise ProbeError(f"{head.name}: the training items hold one class only")
        outs, what = _logistic_path(a, y_tr, b, head.out_dim, C, max_iter), "C"
    if held is None and len(outs) > 1:
        raise ProbeError(f"{head.name}: a grid of {what} needs a held-out selection part")
    scores, per_value = {}, {}
    for value, out in outs.items():
        per_value[value] = {"val": _sklearn_metrics(task, out[n_held:], y_va, c_va)}
        if held is not None:
            per_value[value]["select"] = _sklearn_metrics(task, out[:n_held], held[1], held[2])
        scores[value] = per_value[value]["select" if held is not None else "val"]["all"][
            task.monitor]
    pick = next(iter(scores))
    for value in scores:
        if task.better(scores[value], scores[pick]):
            pick = value
    result.metrics[head.name] = per_value[pick]["val"]
    if held is not None:
        result.selection_metrics[head.name] = per_value[pick]["select"]
    result.chosen[head.name] = {what: pick, "grid": {f"{v:g}": m for v, m in scores.items()}}
    log.info("sklearn %s (%s=%g): %s", head.name, what, pick, per_value[pick]["val"]["all"])


def _sklearn_metrics(task: Task, out: np.ndarray, y: np.ndarray,
                     category: np.ndarray) -> dict[str, dict[str, float]]:
    sums = MetricSums()
    y_t = task.target(y, torch.device("cpu"))
    sums.add(task.sample_metrics(torch.as_tensor(out, dtype=torch.float32), y_t), category)
    return sums.result()


def _ridge_path(a: np.ndarray, t: np.ndarray, b: np.ndarray,
                alphas: tuple[float, ...]) -> dict[float, np.ndarray]:
    from sklearn.linear_model import Ridge

    return {alpha: Ridge(alpha=alpha).fit(a, t).predict(b) for alpha in alphas}


def _logistic_path(a: np.ndarray, y: np.ndarray, b: np.ndarray, out_dim: int,
                   Cs: tuple[float, ...], max_iter: int) -> dict[float, np.ndarray]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    outs = {}
    for c in sorted(Cs):
        model.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(a, y)
        scores = np.full((b.shape[0], out_dim), -np.inf, dtype=np.float64)
        scores[:, model.classes_] = model.decision_function(b).reshape(b.shape[0], -1) \
            if model.classes_.size > 2 else _binary_scores(model, b)
        outs[c] = scores
    return outs


def _binary_scores(model, x: np.ndarray) -> np.ndarray:
    d = model.decision_function(x)
    return np.stack([-d / 2, d / 2], axis=1)
