"""One forward pass per batch that yields every array of the store contract."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property, partial

import numpy as np
import torch
import torch.nn.functional as F

from vitreg.cache import ARRAYS, ROW_META, Geometry, VitregError, arrays_for
from vitreg.cache.names import (
    ATTENTION,
    BLOCKS_NORMS,
    BLOCKS_QKV_NORMS,
    CHOSEN_ATTENTION,
    CHOSEN_NORMS,
    CHOSEN_TOKENS,
    NEIGHBOR_COS,
    NORMS,
    PIXELS,
    POOLED_CLS,
    POOLED_PATCH_MEAN,
    POOLED_REGISTERS,
    QKV_NORMS,
    SAMPLED_INDEX,
    SAMPLED_PREFIX,
    SAMPLED_TOKENS,
    TOKENS,
)
from vitreg.cache.schema import parse_token_mode
from vitreg.core.errors import UsageError
from vitreg.core.registry import RegistryError

from .adapters import Adapter, adapter_for
from .model import LoadedModel

FLOAT16_MAX = float(torch.finfo(torch.float16).max)

_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Float16OverflowError(VitregError, OverflowError):
    """A token value does not fit in float16."""


def refuse_options(adapter: Adapter, with_options: Iterable[str]) -> None:
    """A `--with` option the model's family cannot give exactly is refused, in one sentence."""
    for option in sorted(with_options):
        reason = adapter.refuse_option(option)
        if reason:
            raise UsageError(f"--with {option} is not available for this model: {reason}")


def apply_options(loaded: LoadedModel, with_options: Iterable[str],
                  blocks: Iterable[int]) -> None:
    """Before any work: refuse what the model's family cannot give exactly, and
    record the chosen blocks (`--blocks`) in the model's geometry."""
    adapter = loaded.adapter or adapter_for(loaded.model)
    refuse_options(adapter, with_options)
    chosen = resolve_blocks(blocks, loaded.geometry.depth)
    if chosen and chosen != (loaded.geometry.depth - 1,):
        reason = adapter.refuse_option("blocks")
        if reason:
            raise UsageError(f"--blocks is not available for this model: {reason}")
    loaded.geometry = replace(loaded.geometry, chosen=chosen)


def resolve_blocks(blocks: Iterable[int], depth: int) -> tuple[int, ...]:
    """`--blocks 6,12,-1` -> 0-based block indices, increasing: positive numbers
    count blocks from 1 (the study's "block 12" of a ViT-B is its last),
    negative ones from the end (-1 is the last), like Python's."""
    chosen = set()
    for b in blocks:
        if b == 0 or not -depth <= b <= depth:
            raise UsageError(f"--blocks {b}: the model has {depth} blocks; give 1 to {depth} "
                             f"(1 is the first) or -1 to -{depth} (-1 is the last)")
        chosen.add(b - 1 if b > 0 else depth + b)
    return tuple(sorted(chosen))


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on CUDA and float32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in _PRECISIONS:
        raise UsageError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    return precision


def exact_float32(precision: str, device: torch.device) -> None:
    """Under `fp32` on CUDA, matmuls and convolutions in float32, not TF32:
    cuDNN allows TF32 by default, so the patch embedding (a convolution)
    would run with a 10-bit mantissa while the store says fp32."""
    if precision == "fp32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = _PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def channel_constant(values: Iterable[float], device: torch.device) -> torch.Tensor:
    """A (1, 3, 1, 1) float32 tensor on `device`, built once per run: building it
    per batch from a host tuple is a copy (and on CUDA a wait) per batch."""
    return torch.as_tensor(tuple(values), dtype=torch.float32, device=device).view(1, -1, 1, 1)


def normalize(images: torch.Tensor, mean: Iterable[float] | torch.Tensor,
              std: Iterable[float] | torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 normalised, the same ops as ToTensor + Normalize."""
    x = images.to(torch.float32, copy=True)  # never the caller's tensor: changed in place
    if not isinstance(mean, torch.Tensor):
        mean = channel_constant(mean, x.device)
    if not isinstance(std, torch.Tensor):
        std = channel_constant(std, x.device)
    # in place: one float32 batch instead of four (on a CPU each fresh one
    # faults its pages in: about 1 ms per 160 px image for the four)
    return x.div_(255).sub_(mean).div_(std)


class Taps:
    """What one pass leaves behind, read through the model's adapter: the patch
    embedding, the outputs of the blocks asked for, the [CLS] (or pooling
    query) attention, and per-block q/k/v norms. Each is reduced as it is
    produced, so no block's activations outlive the block."""

    def __init__(self, adapter: Adapter, *, blocks: list[int], attention: list[int],
                 query: bool, qkv: list[int]) -> None:
        self.embed: torch.Tensor | None = None
        self.blocks: dict[int, torch.Tensor] = {}
        self.attention: dict[int | str, torch.Tensor] = {}
        self.qkv: dict[int, torch.Tensor] = {}
        self._handles = adapter.hook_embedding(self._keep_embed)
        for i in blocks:
            self._handles += adapter.hook_block(i, partial(self.blocks.__setitem__, i))
        for i in attention:
            self._handles += adapter.hook_attention(i, partial(self.attention.__setitem__, i))
        if query:
            self._handles += adapter.hook_query(partial(self.attention.__setitem__, "query"))
        for i in qkv:
            self._handles += adapter.hook_qkv(i, partial(self.qkv.__setitem__, i))

    def _keep_embed(self, embed: torch.Tensor) -> None:
        self.embed = embed

    def clear(self) -> None:
        self.embed = None
        for kept in (self.blocks, self.attention, self.qkv):
            kept.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def neighbor_cosine(embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mean cosine similarity of each patch with its 4-neighbours (3 or 2 at edges)."""
    b, d = embed.shape[0], embed.shape[-1]
    x = F.normalize(embed.float().reshape(b, grid[0], grid[1], d), dim=-1)
    total = torch.zeros(b, grid[0], grid[1], device=x.device)
    count = torch.zeros(1, grid[0], grid[1], device=x.device)
    vertical = (x[:, 1:] * x[:, :-1]).sum(-1)
    horizontal = (x[:, :, 1:] * x[:, :, :-1]).sum(-1)
    total[:, 1:] += vertical
    total[:, :-1] += vertical
    total[:, :, 1:] += horizontal
    total[:, :, :-1] += horizontal
    count[:, 1:] += 1
    count[:, :-1] += 1
    count[:, :, 1:] += 1
    count[:, :, :-1] += 1
    return (total / count).reshape(b, -1)


@dataclass
class Pass:
    """What one forward pass left behind; each registered capture reads from it."""

    capture: Capture
    images: torch.Tensor  # uint8 (B, 3, S, S), as the batch gave them
    rows: np.ndarray
    blocks: dict[int, torch.Tensor]  # float32 (B, T, D) outputs of the blocks asked for
    final: torch.Tensor  # float32 (B, T, D) after the final norm
    patch_embed: torch.Tensor
    #: float32 (B, T) attention by block index ([CLS] query) or "query" (pooling head)
    attention: dict[int | str, torch.Tensor]
    qkv: list[torch.Tensor]  # (B, 3, T) q/k/v norms of the blocks asked for
    pooled: torch.Tensor | None  # (B, D) the model's own pooling, where it is read

    @property
    def geometry(self) -> Geometry:
        return self.capture.loaded.geometry

    @property
    def tokens(self) -> torch.Tensor:
        return self.blocks[self.geometry.depth - 1]

    @cached_property
    def norms(self) -> torch.Tensor:
        return self.tokens.norm(dim=-1)

    @cached_property
    def sample_index(self) -> torch.Tensor:
        return self.capture.sample_index(self.norms[:, self.geometry.prefix:], self.rows)


#: How each stored array is computed from one pass; every array of
#: `cache.schema.ARRAYS` but the row metadata has one (a test checks).
CAPTURES: dict[str, Callable[[Pass], torch.Tensor]] = {}


CaptureFn = Callable[[Pass], torch.Tensor]


def captures(name: str) -> Callable[[CaptureFn], CaptureFn]:
    """Register how array `name` (declared in `cache.schema.ARRAYS`) is computed."""

    def add(fn: CaptureFn) -> CaptureFn:
        if name not in ARRAYS or name in ROW_META:
            raise RegistryError(f"capture {name!r}: declare the array in cache/schema.py first")
        if name in CAPTURES:
            raise RegistryError(f"capture {name!r} registered twice")
        CAPTURES[name] = fn
        return fn

    return add


@captures(NORMS)
def _norms(p: Pass) -> torch.Tensor:
    return p.norms


@captures(ATTENTION)
def _attention(p: Pass) -> torch.Tensor:
    if "query" not in p.attention:
        return p.attention[p.geometry.depth - 1]
    attention = p.attention["query"]
    # a pooling head that reads the patches only: the prefix gets no attention
    return F.pad(attention, (p.geometry.tokens - attention.shape[1], 0))


@captures(NEIGHBOR_COS)
def _neighbor_cos(p: Pass) -> torch.Tensor:
    return neighbor_cosine(p.patch_embed, p.geometry.grid)


@captures(POOLED_CLS)
def _pooled_cls(p: Pass) -> torch.Tensor:
    return p.final[:, 0] if p.geometry.has_cls else p.pooled.float()


@captures(POOLED_PATCH_MEAN)
def _pooled_patch_mean(p: Pass) -> torch.Tensor:
    return p.final[:, p.geometry.prefix:].mean(dim=1)


@captures(POOLED_REGISTERS)
def _pooled_registers(p: Pass) -> torch.Tensor:
    return p.final[:, p.geometry.register_slice]


@captures(TOKENS)
def _tokens(p: Pass) -> torch.Tensor:
    return p.tokens


@captures(SAMPLED_INDEX)
def _sampled_index(p: Pass) -> torch.Tensor:
    return p.sample_index


@captures(SAMPLED_TOKENS)
def _sampled_tokens(p: Pass) -> torch.Tensor:
    patches = p.tokens[:, p.geometry.prefix:]
    return patches.gather(1, p.sample_index[..., None].expand(-1, -1, patches.shape[-1]))


@captures(SAMPLED_PREFIX)
def _sampled_prefix(p: Pass) -> torch.Tensor:
    return p.tokens[:, : p.geometry.prefix]


@captures(BLOCKS_NORMS)
def _blocks_norms(p: Pass) -> torch.Tensor:
    return torch.stack([p.blocks[i].norm(dim=-1) for i in range(p.geometry.depth)], dim=1)


@captures(CHOSEN_TOKENS)
def _chosen_tokens(p: Pass) -> torch.Tensor:
    return torch.stack([p.blocks[i] for i in p.geometry.chosen], dim=1)


@captures(CHOSEN_NORMS)
def _chosen_norms(p: Pass) -> torch.Tensor:
    return torch.stack([p.blocks[i].norm(dim=-1) for i in p.geometry.chosen], dim=1)


@captures(CHOSEN_ATTENTION)
def _chosen_attention(p: Pass) -> torch.Tensor:
    return torch.stack([p.attention[i] for i in p.geometry.chosen], dim=1)


@captures(QKV_NORMS)
def _qkv_norms(p: Pass) -> torch.Tensor:
    return p.qkv[-1]


@captures(BLOCKS_QKV_NORMS)
def _blocks_qkv_norms(p: Pass) -> torch.Tensor:
    return torch.stack(p.qkv, dim=1)


@captures(PIXELS)
def _pixels(p: Pass) -> torch.Tensor:
    return p.images.permute(0, 2, 3, 1)


class Capture:
    """Run the model on uint8 batches and return the store's arrays as numpy."""

    def __init__(
        self, loaded: LoadedModel, *, device: torch.device, precision: str,
        with_options: Iterable[str] = (), token_mode: str = "all", seed: int = 42,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model.to(device)
        self.adapter = loaded.adapter or adapter_for(self.model)
        self.device = device
        self.precision = resolve_precision(precision, device)
        exact_float32(self.precision, device)
        self.with_options = set(with_options)
        refuse_options(self.adapter, self.with_options)
        self.token_kind, self.sample_k = parse_token_mode(token_mode)
        self.seed = seed
        query = self.adapter.query()
        chosen = loaded.geometry.chosen  # checked by `apply_options`
        self.names = [spec.name for spec in arrays_for(sorted(self.with_options), token_mode,
                                                       query=query, chosen=bool(chosen))
                      if spec.name not in ROW_META]
        last = self.adapter.depth() - 1
        self.block_indices = sorted({*(range(last + 1) if "blocks" in self.with_options
                                       else [last]), *chosen})
        self.qkv_indices = (list(range(last + 1)) if "blocks_qkv" in self.with_options
                            else [last] if "qkv" in self.with_options else [])
        # the pooling head runs only where it is read: a MAP query, or no [CLS]
        self.pool = query == "map" or not loaded.geometry.has_cls
        self.taps = Taps(self.adapter, blocks=self.block_indices,
                         attention=sorted({last, *chosen}) if query == "cls" else [],
                         query=query == "map",
                         qkv=self.qkv_indices)
        cfg = loaded.data_config
        self.mean = channel_constant(cfg["mean"], device)
        self.std = channel_constant(cfg["std"], device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Arrays of one batch, on the device; `finite` marks rows without NaN/inf."""
        p = self.forward(images, rows)
        out = {name: CAPTURES[name](p) for name in self.names}
        self.taps.clear()
        out["finite"] = torch.stack(
            [torch.isfinite(t).flatten(1).all(1) for t in out.values() if t.is_floating_point()],
            dim=1,
        ).all(1)
        return out

    def forward(self, images: torch.Tensor, rows: np.ndarray) -> Pass:
        """One forward pass, keeping what the captures read."""
        x = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
        taps = self.taps
        taps.clear()  # nothing left from a pass that raised
        with autocast(self.precision, self.device):
            final = self.adapter.features(x)
            pooled = self.adapter.pooled(final) if self.pool else None
        blocks = {i: taps.blocks[i].float() for i in self.block_indices}
        return Pass(self, images, rows, blocks, final.float(), taps.embed, dict(taps.attention),
                    [taps.qkv[i] for i in self.qkv_indices], pooled)

    def sample_index(self, patch_norms: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Per image: the K/2 highest-norm patches (by decreasing norm), then K/2
        patches drawn uniformly from all P (independently of the first half, so
        they may repeat one: the normal ones among them are a uniform draw of
        the image's normal tokens) with a generator seeded by (run seed, row),
        so the draw is the same whatever the batch, worker or process."""
        half = self.sample_k // 2
        top = patch_norms.topk(half, dim=1).indices.cpu().numpy()
        patches = patch_norms.shape[1]
        index = np.empty((len(rows), self.sample_k), dtype=np.int64)
        for i, row in enumerate(rows):
            draw = np.random.default_rng((self.seed, int(row))).choice(
                patches, self.sample_k - half, replace=False)
            index[i] = np.concatenate([top[i], np.sort(draw)])
        return torch.from_numpy(index).to(patch_norms.device, non_blocking=True)
