"""Run an iterator ahead in one background thread (PIL, torch and zarr's
codecs release the GIL in their C code, so the work overlaps)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_DONE = object()


def prefetched(items: Iterable[Any], depth: int = 2, *,
               name: str = "vitreg-prefetch") -> Iterator[Any]:
    """Iterate `items` in a background thread, at most `depth` ahead.

    Errors of the thread are raised here, in the consumer; closing the
    generator stops the thread. `depth <= 0` iterates in the caller's thread.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(("ok", item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))
            return
        put(("ok", _DONE))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "error":
                raise value
            if value is _DONE:
                return
            yield value
    finally:
        stop.set()
        thread.join()
