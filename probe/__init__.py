"""probe stage of vitreg: linear probes on cached tokens, streamed from the store.

`run_probe(kind, store, out=..., val=..., **options)` runs one registered probe
(`PROBES`: position, reconstruct, classify, linear); `vitreg.probe.cli.probe`
is the click group.
"""

from .registry import PROBES, Option, ProbeError, ProbeSpec, register_probe, unregister_probe
from .run import run_probe

__all__ = ["PROBES", "Option", "ProbeError", "ProbeSpec", "register_probe", "run_probe",
           "unregister_probe"]
