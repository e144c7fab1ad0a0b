"""One batch from the device to the host, pipelined: launch batch i+1, then
finish batch i.

`Step.launch` runs the forward pass, casts every array to its store dtype on
the device, computes the range checks there (rows without NaN/inf, one amax
per float16 array) and queues the copies into host staging buffers; on CUDA
the buffers are pinned, the copies run on a copy stream and an event marks
their end. Nothing in `launch` waits for the device. `Step.finish` waits on
that event, without spinning (`wait_event`), and returns NumPy views of
the buffers; the writer may write them in place (`hold`) until the step
needs that buffer set again. Per step there is no
`.cpu()`, `.item()`, `bool(tensor)`, `.numpy()` or boolean-mask indexing
(`tests/test_extract/test_step.py` counts them), except with
`--tokens sampled:K`, whose draw (`Capture.sample_index`) reads the top-k
indices on the host once per batch.

On a CPU the same code runs synchronously, and the values are those of
`tensor.to(dtype).cpu().numpy()`, bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .capture import FLOAT16_MAX, Capture, Float16OverflowError

#: Seconds `wait_event` sleeps between two queries of an event: at most this
#: much late for a batch of 100-300 ms on a GPU, for a few hundred wake-ups a
#: second (microseconds of CPU each) instead of a core spinning.
POLL_SECONDS = 0.0005


class Waitable(Protocol):
    def query(self) -> bool: ...


def wait_event(event: Waitable, poll: float = POLL_SECONDS) -> float:
    """Wait until `event` has fired, sleeping between queries; the seconds
    waited. A default CUDA event's `synchronize()` spins a CPU core for the
    whole forward pass (one core per rank); the step's events are also made
    blocking (`torch.cuda.Event(blocking=True)`, the driver then sleeps in
    `synchronize`), but the sleeping loop here does not depend on it."""
    start = time.perf_counter()
    while not event.query():
        time.sleep(poll)
    return time.perf_counter() - start


class Held(Protocol):
    def wait(self) -> float: ...


@dataclass
class Staged:
    """One batch in flight: host views that are valid once `event` has fired."""

    rows: np.ndarray
    host: dict[str, np.ndarray]
    amax: np.ndarray  # float32, one per float16 array (`Step.checked` order)
    event: torch.cuda.Event | None = None
    #: the outputs before the cast (for the rare slow check) and after it;
    #: held until the copies are done, so the allocator cannot reuse them
    keep: tuple[dict[str, torch.Tensor], ...] = ()
    slot: int = 0  # which staging buffer set holds it


@dataclass
class StepTimes:
    """Seconds the host spent in each part of the step, summed over batches."""

    launch: float = 0.0  # queueing the forward pass and the copies (all of it on a CPU)
    event: float = 0.0  # waiting for the copies to the host (on CUDA: for the device)
    held: float = 0.0  # waiting for the writer to release a staging buffer set
    batches: int = 0


#: Staging buffer sets: batch i's set is refilled by batch i + STAGING_DEPTH,
#: so the writer has STAGING_DEPTH - 2 batch times to write batch i in place
#: (`hold`) before the loop waits on it; ViT-L at batch 256 stages 145 MB a set.
STAGING_DEPTH = 4


class Step:
    """The device half of the extraction loop, with `depth` staging buffer sets."""

    def __init__(self, capture: Capture, dtypes: dict[str, str], *,
                 depth: int = STAGING_DEPTH) -> None:
        self.capture = capture
        self.dtypes = {name: dtypes.get(name, "bool") for name in [*capture.names, "finite"]}
        self.checked = [n for n in capture.names if self.dtypes[n] == "float16"]
        self.device = capture.device
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._ring: list[dict[str, tuple[torch.Tensor, np.ndarray]]] = [{} for _ in range(depth)]
        self._held: list[Held | None] = [None] * depth
        self._turn = 0
        self.times = StepTimes()

    def hold(self, staged: Staged, held: Held) -> None:
        """`staged`'s host arrays are being read (the writer writes them in
        place) until `held.wait()` returns: the step waits on it before it
        refills that buffer set."""
        self._held[staged.slot] = held

    def release_all(self) -> None:
        """Wait until nothing reads the staging buffers (the end of the loop)."""
        for slot, held in enumerate(self._held):
            if held is not None:
                self.times.held += held.wait()
                self._held[slot] = None

    def launch(self, images: torch.Tensor, rows: np.ndarray) -> Staged:
        """Queue batch `rows` on the device; returns before it has run on CUDA."""
        slot = self._turn
        held, self._held[slot] = self._held[slot], None
        if held is not None:
            self.times.held += held.wait()
        start = time.perf_counter()
        staged = self._launch(images, rows)
        staged.slot = slot
        self.times.launch += time.perf_counter() - start
        self.times.batches += 1
        return staged

    def _launch(self, images: torch.Tensor, rows: np.ndarray) -> Staged:
        with torch.inference_mode():
            out = self.capture(images, rows)
            cast = {name: out[name].to(getattr(torch, self.dtypes[name])) for name in out}
            present = [out[n] for n in self.checked if out[n].numel()]
            amax = torch.stack([t.abs().amax().float() for t in present]) if present else \
                torch.zeros(0, device=self.device)
            cast["_amax"] = amax
            buffers = self._buffers(len(rows), cast)
            event = self._copy(cast, buffers)
        host = {name: buffers[name][1][: len(tensor)] for name, tensor in cast.items()}
        amax_host = host.pop("_amax")
        return Staged(rows, host, amax_host, event, keep=(out, cast))

    def finish(self, staged: Staged) -> dict[str, np.ndarray]:
        """Wait for the copies of `staged`; its arrays (views of the staging
        buffers, valid until `depth` more launches), with `finite` per row."""
        if staged.event is not None:
            self.times.event += wait_event(staged.event)
        if not (staged.amax <= FLOAT16_MAX).all():  # NaN/inf or a real overflow: rare
            self._check_float16(staged)
        staged.keep = ()
        return dict(staged.host)

    def _copy(self, cast: dict[str, torch.Tensor],
              buffers: dict[str, tuple[torch.Tensor, np.ndarray]]) -> torch.cuda.Event | None:
        if not self.cuda:
            for name, tensor in cast.items():
                buffers[name][0][: len(tensor)].copy_(tensor)
            return None
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.copy_stream):
            for name, tensor in cast.items():
                buffers[name][0][: len(tensor)].copy_(tensor, non_blocking=True)
            event = torch.cuda.Event(blocking=True)
            event.record(self.copy_stream)
        return event

    def _buffers(self, batch: int, cast: dict[str, torch.Tensor]
                 ) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
        """The next staging set, (re)allocated when a batch outgrows it; each
        buffer's NumPy view is made once, at allocation."""
        ring = self._ring[self._turn]
        self._turn = (self._turn + 1) % len(self._ring)
        for name, tensor in cast.items():
            held = ring.get(name)
            if (held is None or held[0].shape[0] < len(tensor)
                    or held[0].shape[1:] != tensor.shape[1:]):
                buf = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=self.cuda)
                ring[name] = (buf, buf.numpy())
        return ring

    def _check_float16(self, staged: Staged) -> None:
        """Values beyond float16's range would be stored as inf: refuse instead.
        NaN/inf alone are not an overflow (their rows are marked failed)."""
        for name in self.checked:
            tensor = staged.keep[0][name]
            finite = tensor[torch.isfinite(tensor)]
            if finite.numel() and finite.abs().max().item() > FLOAT16_MAX:
                raise Float16OverflowError(
                    f"values of {name!r} exceed float16's range ({FLOAT16_MAX:g}); they would "
                    "be stored as inf. Run again with --dtype float32 to store tokens in float32."
                )
