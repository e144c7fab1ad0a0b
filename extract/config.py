"""`ExtractConfig`: every option of an extraction, in one place.

One field per option, with its type, default and help. The command line
(`extract.cli` builds `vitreg extract`'s options from the fields), `run_extract`,
the dry run, the store's root attributes and the study's plan keys
(`study.stages`) all read it: adding an option is adding a field here.

Each field's `Setting` (its metadata) says how it is spelt on the command line
and in a study plan, whether it only changes how the run goes (`execution`:
left out of a study step's identity, never recorded) and which root attributes
record its effect (`records`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vitreg.cache.schema import WITH_OPTIONS, parse_token_mode
from vitreg.core.errors import UsageError
from vitreg.core.numbers import COUNT, COUNT_OR_ZERO, SEED, Range

#: How an option is spelt where the study reads it: `[study]` (every
#: extraction's default) and/or `[extract.NAME]` (one extraction's recipe).
STUDY, EXTRACT = "study", "extract"
#: timm's interpolation names (`timm.data.transforms.str_to_interp_mode`).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")

#: Named evaluation protocols: what each changes in the model's own data
#: config (mean and std always stay the model's). At S px, crop_pct c resizes
#: the shorter side to floor(S / c) and centre-crops S.
PRESETS: dict[str, dict[str, Any]] = {
    # timm's pretrained config as it is: DINOv2 resize 224 / crop 224 (crop_pct 1.0),
    # DeiT3 crop_pct 1.0, OpenCLIP 0.9, DINO 0.875; the study's maps and probes.
    "timm": {},
    # dinov2/eval (make_classification_eval_transform): resize 256 / crop 224,
    # bicubic; the official linear heads of Table 4 were evaluated so.
    "dinov2-linear": {"crop_pct": 224 / 256, "interpolation": "bicubic", "crop_mode": "center"},
}

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DECODES = ("cpu", "gpu")
TOKENS_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class Setting:
    """What the code outside `ExtractConfig` needs to know of one field."""

    help: str
    #: the command-line flag; "" for `--field-name`; None: not on the command line
    flag: str | None = ""
    choices: tuple[str, ...] | None = None
    range: Range | None = None
    #: a value that is neither a plain type nor a choice nor a number:
    #: "shards", "path", "tokens", "with", "blocks", "workers"
    kind: str | None = None
    #: changes how the run goes, never what it writes
    execution: bool = False
    #: the study plan tables that may set it (`STUDY`, `EXTRACT`)
    plan: tuple[str, ...] = ()
    #: the root attributes (`cache.attrs`) that record its effect
    records: tuple[str, ...] = ()


def setting(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A field of `ExtractConfig` with its `Setting`."""
    return field(default=default, metadata={"setting": Setting(**meta)})


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """Everything `run_extract` is told; in `vitreg extract --help` order."""

    shards: tuple[str, ...] = setting(
        help="SHARDS: paths, brace patterns, pipe: URLs", flag=None, kind="shards",
        records=("shards", "shard_digests"))
    model: str = setting(help="timm model name, e.g. vit_small_patch14_reg4_dinov2.lvd142m",
                         records=("model",))
    # The store itself, not one of its attributes (the study names it after the step).
    out: str = setting(help="Store path or fsspec URL.", execution=True)
    weights: str = setting(
        "pretrained", help="pretrained (timm hub or local cache), random (tests, demo), "
        "or a .safetensors / torch file.", plan=(STUDY,), records=("weights",))
    img_size: int | None = setting(
        None, help="Input size; rounded down to a multiple of the patch size.", range=COUNT,
        plan=(EXTRACT,), records=("img_size",))
    preprocess: str = setting(
        "timm", help="Evaluation protocol: timm (the model's pretrained config) or dinov2-linear "
        "(resize 256 / crop 224 at 224 px, bicubic: DINOv2's linear heads).",
        choices=tuple(PRESETS), plan=(EXTRACT,),
        records=("preprocessing_preset", "preprocessing"))
    crop_pct: float | None = setting(
        None, help="Resize the shorter side to S / crop-pct, then centre-crop S "
        "(0.875: 256 -> 224).", range=Range(0, 1, low_open=True), plan=(EXTRACT,),
        records=("preprocessing",))
    interpolation: str | None = setting(
        None, help="Resize interpolation (timm's names).", choices=tuple(INTERPOLATIONS),
        plan=(EXTRACT,), records=("preprocessing",))
    decode: str = setting(
        "cpu", help="cpu: PIL and timm's transform, exactly (the default). gpu: decode the JPEGs "
        "and resize them on the run's device with torchvision (nvJPEG on CUDA; what it refuses "
        "is decoded on the CPU); a recorded variant: pixels within a few levels of timm's.",
        choices=DECODES, plan=(EXTRACT,), records=("decode",))
    batch_size: int | None = setting(
        None, help="Images per forward pass [default: 32 on a CPU; on a GPU the largest power of "
        "two up to 256 that fits a quarter of its memory].", range=COUNT, execution=True,
        plan=(STUDY, EXTRACT))
    precision: str = setting(
        "auto", help="auto: bf16 autocast on CUDA, fp32 on CPU.", choices=PRECISIONS,
        plan=(STUDY, EXTRACT), records=("precision",))
    device: str = setting("auto", help="auto, cpu, cuda or cuda:i.", execution=True,
                          plan=(STUDY, EXTRACT))
    workers: int | str = setting(
        "auto", help="DataLoader decode workers; auto: on a GPU one per core but one; on a CPU "
        "one per core if decoding costs more than the model (measured on the first samples), "
        "else 0 (decoding uses every core between batches).", kind="workers", execution=True,
        plan=(STUDY, EXTRACT))
    limit: int | None = setting(None, help="Stop after this many samples.", range=COUNT,
                                plan=(EXTRACT,), records=("n_rows",))
    keys_file: str | None = setting(
        None, help="Extract only these sample keys (one a line), rows in the file's order.",
        flag="--keys", kind="path", plan=(EXTRACT,), records=("keys_file",))
    token_mode: str = setting(
        "all", help="Which patch tokens to store: all, none (pooled features only), or "
        "sampled:K (the K/2 highest-norm and K/2 random others per image).", flag="--tokens",
        kind="tokens", plan=(EXTRACT,), records=("token_mode",))
    tokens_dtype: str = setting(
        "float16", help="dtype of the stored tokens; float32 when values exceed float16's range.",
        flag="--dtype", choices=TOKENS_DTYPES, plan=(EXTRACT,), records=("tokens_dtype",))
    with_options: tuple[str, ...] = setting(
        (), help="Optional arrays: pixels,blocks,qkv,blocks_qkv.", flag="--with", kind="with",
        plan=(EXTRACT,), records=("with",))
    blocks: tuple[int, ...] = setting(
        (), help="Also store the tokens, norms and [CLS] attention of these blocks "
        "(1 is the first, -1 the last), e.g. 6,12,-1.", kind="blocks", plan=(EXTRACT,),
        records=("blocks",))
    # Not recorded in the attributes: the arrays' chunk shapes hold it.
    chunk_rows: int | None = setting(
        None, help="Rows per chunk (default: tokens chunks of ~16 MiB).", range=COUNT,
        plan=(EXTRACT,))
    seed: int = setting(42, help="Seed of random weights and of the tokens drawn by --tokens "
                        "sampled:K.", range=SEED, plan=(STUDY,), records=("seed",))
    rank: int | None = setting(
        None, help="This job's rank among --world-size independent jobs (SLURM array).",
        range=COUNT_OR_ZERO, execution=True)
    world_size: int | None = setting(
        None, help="Number of independent jobs sharing the store.", range=COUNT, execution=True)
    overwrite: bool = setting(False, help="Start afresh even if the store exists.",
                              execution=True)
    progress: bool = setting(True, help="Show a progress bar.", flag=None, execution=True)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, checked(f, getattr(self, f.name)))

    def replace(self, **changes: Any) -> ExtractConfig:
        """A copy with `changes` (checked as at creation; an unknown name is a TypeError)."""
        return dataclasses.replace(self, **changes)


def settings(cls: type = ExtractConfig) -> dict[str, Setting]:
    """Field name -> its `Setting`, in field order."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls)}


def fields_of(cls: type = ExtractConfig) -> Iterator[tuple[dataclasses.Field, Setting]]:
    for f in dataclasses.fields(cls):
        yield f, f.metadata["setting"]


def flag_of(name: str, spec: Setting) -> str:
    return spec.flag or "--" + name.replace("_", "-")


def plan_key(name: str, spec: Setting) -> str:
    """The option's name in a study plan: its flag in snake case (`--tokens`: `tokens`)."""
    return flag_of(name, spec).removeprefix("--").replace("-", "_")


def plan_keys(table: str, cls: type = ExtractConfig) -> dict[str, str]:
    """Plan key -> field name of the options a plan's `table` may set."""
    return {plan_key(f.name, s): f.name for f, s in fields_of(cls) if table in s.plan}


def execution_keys(cls: type = ExtractConfig) -> frozenset[str]:
    """Plan keys of the settings that change how a run goes, never what it writes."""
    return frozenset(plan_key(f.name, s) for f, s in fields_of(cls)
                     if s.execution and s.plan)


class OptionError(UsageError):
    """An option's value is refused; `why` says why without naming the option."""

    def __init__(self, label: str, value: Any, why: str) -> None:
        super().__init__(f"{label} {value!r}: {why}")
        self.why = why


def check_option(name: str, value: Any, *, label: str | None = None,
                 cls: type = ExtractConfig) -> Any:
    """`value` of option `name` normalised, or an `OptionError` naming it as
    `label` (by default its command-line flag)."""
    return checked(cls.__dataclass_fields__[name], value, label=label)


def checked(f: dataclasses.Field, value: Any, *, label: str | None = None) -> Any:
    """`value` of field `f`, normalised, or an `OptionError` naming the option."""
    spec: Setting = f.metadata["setting"]
    label = label or (f.name if spec.flag is None else flag_of(f.name, spec))
    if value is None and f.default is None:
        return None
    try:
        return _check(f, spec, value)
    except (TypeError, ValueError) as exc:
        raise OptionError(label, value, str(exc)) from None


def _check(f: dataclasses.Field, spec: Setting, value: Any) -> Any:
    if spec.kind is not None:
        return _KINDS[spec.kind](value)
    if spec.choices is not None:
        if value not in spec.choices:
            raise ValueError(f"choose from {', '.join(spec.choices)}")
        return value
    if spec.range is not None or value_type(f) in (int, float):
        return _number(number_range(f), value)
    expected = value_type(f)
    if not isinstance(value, expected):
        raise TypeError(f"give {'true or false' if expected is bool else 'a string'}")
    return value


def value_type(f: dataclasses.Field) -> type:
    """The plain type of a field's annotation (`int | None`: int); str when not plain."""
    names = [n.strip() for n in str(f.type).split("|") if n.strip() != "None"]
    return _PLAIN.get(names[0], str) if len(names) == 1 else str


_PLAIN: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def number_range(f: dataclasses.Field) -> Range:
    """The allowed values of a numeric field: its `Setting.range`, or any finite
    number of its type."""
    spec: Setting = f.metadata["setting"]
    return spec.range or Range(integer=value_type(f) is int)


def _number(range_: Range, value: Any) -> int | float:
    """A number in `range_`; strings (even "42") and floats for an integer are refused."""
    why = range_.problem(value)
    if isinstance(value, str | bool) or (range_.integer and isinstance(value, float)) or why:
        raise ValueError(why if why and not isinstance(value, str)
                         else f"give {range_.describe()}")
    return int(value) if range_.integer else float(value)


def _shards(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | os.PathLike):
        value = [value]
    if not isinstance(value, list | tuple) or not value or not all(
            isinstance(v, str | os.PathLike) for v in value):
        raise TypeError("give a list of shard paths or URLs")
    return tuple(os.fspath(v) for v in value)


def _path(value: Any) -> str:
    if not isinstance(value, str | os.PathLike):
        raise TypeError("give a file path")
    return os.fspath(value)


def _tokens(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("give all, none or sampled:K")
    parse_token_mode(value)  # ValueError: says what is wrong
    return value


def _with(value: Any) -> tuple[str, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) \
        else list(value)
    unknown = sorted(set(map(str, items)) - set(WITH_OPTIONS))
    if unknown:
        raise ValueError(f"unknown {unknown}; choose from {', '.join(WITH_OPTIONS)}")
    return tuple(sorted(set(items)))


def _blocks(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError("give block numbers (1 the first, -1 the last), such as [6, 12, -1]")
    return tuple(value)


def _workers(value: Any) -> int | str:
    return value if value == "auto" else _number(COUNT_OR_ZERO, value)


_KINDS = {"shards": _shards, "path": _path, "tokens": _tokens, "with": _with,
          "blocks": _blocks, "workers": _workers}
