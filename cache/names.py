"""The store's array names, one constant each: the only spelling of an array
path outside the schema's table (`schema.ARRAYS`, which is built from these;
a test checks that the two name the same arrays).

Code outside `cache/` writes `names.POOLED_CLS`, never `"pooled/cls"`
(`tests/test_imports.py` checks it)."""

from __future__ import annotations

# -- one value per row, written by every store -------------------------------
KEY = "key"
LABEL = "label"
STATUS = "status"
ERROR = "error"

# -- the last block ----------------------------------------------------------
TOKENS = "tokens"
NORMS = "norms"
ATTENTION = "attention"
NEIGHBOR_COS = "neighbor_cos"
QKV_NORMS = "qkv_norms"

# -- after the final norm ----------------------------------------------------
POOLED_CLS = "pooled/cls"
POOLED_PATCH_MEAN = "pooled/patch_mean"
POOLED_REGISTERS = "pooled/registers"

# -- options -----------------------------------------------------------------
PIXELS = "pixels"
BLOCKS_NORMS = "blocks/norms"
BLOCKS_QKV_NORMS = "blocks/qkv_norms"
CHOSEN_TOKENS = "chosen/tokens"
CHOSEN_NORMS = "chosen/norms"
CHOSEN_ATTENTION = "chosen/attention"
SAMPLED_INDEX = "sampled/index"
SAMPLED_TOKENS = "sampled/tokens"
SAMPLED_PREFIX = "sampled/prefix"

#: The row metadata: what a row is (key, label) and how it went (error,
#: status), written by the cache for every row whatever the model captures.
#: A writer writes them last, `status` last of all, so that a row is never ok
#: before its data are in.
ROW_META = (KEY, LABEL, ERROR, STATUS)

#: The last block's arrays, and where a store keeps them for a chosen block
#: (`--blocks`): `Store.at_block` reads the latter under the former's name.
BLOCK_ARRAYS = {TOKENS: CHOSEN_TOKENS, NORMS: CHOSEN_NORMS, ATTENTION: CHOSEN_ATTENTION}

#: The pooled features a probe may join, by short name (`--features cls+registers`).
POOLED = {"cls": POOLED_CLS, "patch_mean": POOLED_PATCH_MEAN, "registers": POOLED_REGISTERS}
