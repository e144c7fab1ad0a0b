"""Option tables the probes share: training, token selection and the
scikit-learn backend's grids."""

from __future__ import annotations

from vitreg.core.numbers import COUNT, COUNT_OR_ZERO, NON_NEGATIVE, POSITIVE, Range

from .registry import Option

#: SGD momentum: 1 and above never converge.
MOMENTUM = Range(0, 1, high_open=True)

SKLEARN_OPTIONS = (
    Option("sklearn_c", "0.1,1,10,100", "--backend sklearn: inverse L2 strengths of "
           "LogisticRegression tried; the best on validation is kept and reported",
           range=POSITIVE, grid=True),
    Option("sklearn_alpha", "0.01,0.1,1,10,100", "--backend sklearn: L2 strengths of Ridge "
           "tried; the best on validation is kept and reported", range=POSITIVE, grid=True),
    Option("sklearn_max_iter", 1000, "--backend sklearn: LogisticRegression iterations",
           range=COUNT),
)

#: Learning rates of the grid (Adam/AdamW on standardised features).
LR_GRID = "0.001,0.003,0.01,0.03,0.1"


def training_options(monitor: str, optimizer: str, weight_decay: float, *,
                     epochs: int = 30) -> tuple[Option, ...]:
    """Epochs, patience, learning rate and weight decay of a probe with early stopping."""
    return (
        Option("epochs", epochs, f"most epochs (paper: up to {epochs})", range=COUNT),
        Option("patience", 3, f"early stopping on validation {monitor} (paper: 3)",
               range=COUNT),
        Option("lr", LR_GRID, f"{optimizer} learning rates, cosine schedule (not given by the "
               "paper): one head each, trained side by side; the best on validation is kept "
               "and reported (dinov2's linear evaluation)", range=POSITIVE, grid=True),
        Option("min_steps", 4000, "fewest optimisation steps in all: a store whose pass holds "
               "few mini-batches gets epochs of several passes (early stopping counts epochs)",
               range=COUNT_OR_ZERO),
        Option("weight_decay", weight_decay, f"{optimizer} weight decay", range=NON_NEGATIVE),
    )


TOKEN_OPTIONS = (
    Option("normals", None, "normal tokens per split part (default: as many as the part's "
           "outliers)", type=int, range=COUNT_OR_ZERO),
)

