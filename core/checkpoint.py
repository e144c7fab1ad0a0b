"""Read a checkpoint's tensors without ever unpickling code: safetensors, or
`torch.load(weights_only=True)`."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import InputError, VitregError

#: Keys under which training scripts nest the state dict, tried in this order.
WRAPPERS = ("model", "state_dict", "teacher", "head")


class CheckpointError(InputError):
    """A weights file that does not exist or cannot be read safely."""


def read_state_dict(path: str | Path, *, error: type[VitregError] = CheckpointError,
                    label: str = "") -> dict[str, torch.Tensor]:
    """A checkpoint's tensors (unwrapped from `WRAPPERS`); failures raise `error`
    with a message that starts with `label` (an option such as `--head PATH: `)."""
    path = Path(path)
    where = label or str(path)
    if not path.is_file():
        raise error(f"{where}: no such file; check the path")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise error(f"{where} is not a readable .safetensors file ({exc}); "
                        "check the file, or save it again") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(
            f"{where} is not a weights-only tensor checkpoint (torch.load with weights_only=True "
            f"refused it: {(str(exc).splitlines() or [type(exc).__name__])[0]}). vitreg never "
            "unpickles code: convert "
            "it to .safetensors in a trusted environment."
        ) from exc
    for wrapper in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise error(f"{where} holds a {type(state).__name__}, not a state dict")
    return state
