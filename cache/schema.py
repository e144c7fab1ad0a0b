"""The store contract in code: array names, dimensions, dtypes and codecs.

`cache_schema.md` is the prose version of this module; a test checks that the
two agree, so change both together and bump `SCHEMA_VERSION`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from vitreg.core.errors import UsageError
from vitreg.core.registry import RegistryError

from . import names as n

SCHEMA_VERSION = "1.7"

#: Codec names (zarr v3 metadata) and dtypes a store may use. Anything else
#: is refused before a chunk is decoded: a store may come from a stranger.
ALLOWED_CODECS = frozenset(
    {"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose", "sharding_indexed", "vlen-utf8"}
)
ALLOWED_DTYPES = frozenset({"uint8", "int16", "int32", "float16", "float32", "string"})


#: What a prefix token may be, in a store's `prefix_layout` attribute.
PREFIX_KINDS = ("cls", "register", "distillation")


@dataclass(frozen=True)
class Geometry:
    """Token layout of one model at one image size."""

    registers: int
    grid: tuple[int, int]
    dim: int
    depth: int
    img_size: int
    prefix: int | None = None  # prefix tokens; None: [CLS] + registers
    #: what each prefix token is (`PREFIX_KINDS`), in order; () : [CLS] (when
    #: prefix > registers), then the registers
    layout: tuple[str, ...] = ()
    #: blocks whose tokens, norms and attention the `chosen/*` arrays hold
    #: (`--blocks`), 0-based, increasing; () : none
    chosen: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        prefix = 1 + self.registers if self.prefix is None else self.prefix
        layout = tuple(self.layout)
        if not layout:
            if prefix - self.registers not in (0, 1):
                raise ValueError(f"{prefix} prefix tokens and {self.registers} registers need "
                                 "a layout naming each prefix token")
            layout = ("cls",) * (prefix - self.registers) + ("register",) * self.registers
        unknown = sorted(set(layout) - set(PREFIX_KINDS))
        if len(layout) != prefix or layout.count("register") != self.registers or unknown:
            raise ValueError(f"prefix layout {layout} does not fit {prefix} prefix tokens "
                             f"with {self.registers} registers")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "chosen", tuple(self.chosen))

    @property
    def has_cls(self) -> bool:
        return "cls" in self.layout

    @property
    def register_slice(self) -> slice:
        """Where the registers sit among the tokens (contiguous, in timm's order)."""
        first = self.layout.index("register") if self.registers else self.prefix
        return slice(first, first + self.registers)

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        return self.prefix + self.patches


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: its name, per-row shape and meaning."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    row_shape: Callable[[Geometry, int], tuple[int, ...]]
    doc: str
    option: str | None = None  # the `--with` option or token mode that adds it


def _scalar(g: Geometry, k: int) -> tuple[int, ...]:
    return ()


ARRAYS: dict[str, ArraySpec] = {}


def _register(spec: ArraySpec) -> None:
    if spec.name in ARRAYS:
        raise RegistryError(f"array {spec.name!r} registered twice")
    ARRAYS[spec.name] = spec


for _spec in [
    ArraySpec(n.KEY, ("image",), "string", _scalar, "the sample's `__key__`"),
    ArraySpec(n.LABEL, ("image",), "int32", _scalar, "class index, -1 if unknown"),
    ArraySpec(n.STATUS, ("image",), "uint8", _scalar, "0 pending, 1 ok, 2 failed"),
    ArraySpec(n.ERROR, ("image",), "string", _scalar,
              "why a row failed; for an ok row, empty or a warning that starts with `warning:`"),
    ArraySpec(
        n.TOKENS, ("image", "token", "dim"), "float16", lambda g, k: (g.tokens, g.dim),
        "output of the last block, before the final norm", option="tokens:all",
    ),
    ArraySpec(
        n.NORMS, ("image", "token"), "float32", lambda g, k: (g.tokens,),
        "L2 norm of each last-block token, in float32 before any cast",
    ),
    ArraySpec(
        n.ATTENTION, ("image", "token"), "float16", lambda g, k: (g.tokens,),
        "softmax attention of the last block's [CLS] query (or of the pooling head's query), "
        "mean over heads",
    ),
    ArraySpec(
        n.NEIGHBOR_COS, ("image", "patch"), "float16", lambda g, k: (g.patches,),
        "mean cosine similarity of each patch embedding with its 4-neighbours",
    ),
    ArraySpec(
        n.POOLED_CLS, ("image", "dim"), "float32", lambda g, k: (g.dim,),
        "[CLS] after the final norm; for a model without [CLS], its own pooled output",
    ),
    ArraySpec(
        n.POOLED_PATCH_MEAN, ("image", "dim"), "float32", lambda g, k: (g.dim,),
        "mean of the patch tokens after the final norm, registers excluded",
    ),
    ArraySpec(
        n.POOLED_REGISTERS, ("image", "register", "dim"), "float32",
        lambda g, k: (g.registers, g.dim), "registers after the final norm (R may be 0)",
    ),
    ArraySpec(
        n.PIXELS, ("image", "y", "x", "channel"), "uint8",
        lambda g, k: (g.img_size, g.img_size, 3), "the model input before normalisation",
        option="pixels",
    ),
    ArraySpec(
        n.BLOCKS_NORMS, ("image", "block", "token"), "float16",
        lambda g, k: (g.depth, g.tokens), "token norms after every block", option="blocks",
    ),
    ArraySpec(
        n.QKV_NORMS, ("image", "qkv", "token"), "float16", lambda g, k: (3, g.tokens),
        "norms of q, k, v of the last block (heads concatenated)", option="qkv",
    ),
    ArraySpec(
        n.BLOCKS_QKV_NORMS, ("image", "block", "qkv", "token"), "float16",
        lambda g, k: (g.depth, 3, g.tokens),
        "norms of q, k, v of every block (heads concatenated)", option="blocks_qkv",
    ),
    ArraySpec(
        n.CHOSEN_TOKENS, ("image", "chosen", "token", "dim"), "float16",
        lambda g, k: (len(g.chosen), g.tokens, g.dim),
        "output of each chosen block (`--blocks`), before the final norm", option="chosen",
    ),
    ArraySpec(
        n.CHOSEN_NORMS, ("image", "chosen", "token"), "float32",
        lambda g, k: (len(g.chosen), g.tokens),
        "L2 norm of each token of `chosen/tokens`, in float32 before any cast", option="chosen",
    ),
    ArraySpec(
        n.CHOSEN_ATTENTION, ("image", "chosen", "token"), "float16",
        lambda g, k: (len(g.chosen), g.tokens),
        "each chosen block's softmax attention of the [CLS] query, mean over heads",
        option="chosen",
    ),
    ArraySpec(
        n.SAMPLED_INDEX, ("image", "sample"), "int16", lambda g, k: (k,),
        "patch index of each sampled token", option="tokens:sampled",
    ),
    ArraySpec(
        n.SAMPLED_TOKENS, ("image", "sample", "dim"), "float16", lambda g, k: (k, g.dim),
        "the sampled patch tokens", option="tokens:sampled",
    ),
    ArraySpec(
        n.SAMPLED_PREFIX, ("image", "prefix", "dim"), "float16",
        lambda g, k: (g.prefix, g.dim),
        "[CLS] and the registers of the last block's output, before the final norm",
        option="tokens:sampled",
    ),
]:
    _register(_spec)

#: Optional extras a user may ask for with `--with`.
WITH_OPTIONS = ("pixels", "blocks", "qkv", "blocks_qkv")


def parse_token_mode(mode: str) -> tuple[str, int]:
    """Parse `all`, `none` or `sampled:K` into (kind, K)."""
    if mode in ("all", "none"):
        return mode, 0
    kind, _, k = mode.partition(":")
    if kind == "sampled" and k.isdigit() and int(k) > 0 and int(k) % 2 == 0:
        return "sampled", int(k)
    raise UsageError(f"token mode must be all, none or sampled:K with K even and > 0, not {mode!r}")


#: Arrays whose dtype `--dtype` chooses (float16 by default).
TOKEN_ARRAYS = (n.TOKENS, n.SAMPLED_TOKENS, n.SAMPLED_PREFIX, n.CHOSEN_TOKENS)
TOKEN_DTYPES = ("float16", "float32")


def arrays_for(
    with_options: tuple[str, ...] | list[str], token_mode: str, tokens_dtype: str = "float16",
    *, query: str | None = "cls", chosen: bool = False,
) -> list[ArraySpec]:
    """The arrays a store holds for these options, in a stable order. `query`
    is whose attention the model has (`cls`, `map`, or None: no `attention`);
    `chosen`: blocks were chosen (`--blocks`), whose `chosen/attention` needs
    a [CLS] query."""
    kind, _ = parse_token_mode(token_mode)
    if tokens_dtype not in TOKEN_DTYPES:
        raise UsageError(f"tokens dtype must be one of {TOKEN_DTYPES}, not {tokens_dtype!r}")
    unknown = set(with_options) - set(WITH_OPTIONS)
    if unknown:
        raise UsageError(f"unknown --with option(s): {sorted(unknown)}; known: {WITH_OPTIONS}")
    options = {*with_options, f"tokens:{kind}", *(["chosen"] if chosen else [])}
    picked = []
    for spec in ARRAYS.values():
        if spec.name in TOKEN_ARRAYS:
            spec = replace(spec, dtype=tokens_dtype)
        if (spec.name == n.ATTENTION and query is None) or (
                spec.name == n.CHOSEN_ATTENTION and query != "cls"):
            continue
        if spec.option is None or spec.option in options:
            picked.append(spec)
    return picked
