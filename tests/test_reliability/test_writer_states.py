"""Stateful property test: write batches, crash, resume, read, against a numpy model."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vitreg.cache import ChunkWriter, Geometry, arrays_for, create_store
from vitreg.cache.store import open_group
from vitreg.testing import synthetic_attrs

GEOM = Geometry(registers=1, grid=(2, 2), dim=3, depth=1, img_size=28)
N_ROWS, CHUNK = 19, 4
NAMES = ["norms", "tokens", "key", "status"]


def row_values(rows: np.ndarray) -> dict[str, np.ndarray]:
    """What row r must hold: a function of r alone, so any run writes the same."""
    r = rows.astype(np.float32)[:, None]
    return {
        "norms": r + np.arange(GEOM.tokens, dtype=np.float32),
        "tokens": (r[:, :, None] * 0.5 + np.ones((1, GEOM.tokens, GEOM.dim))).astype(np.float16),
        "key": np.array([f"row{i}" for i in rows], dtype=object),
        "status": np.ones(len(rows), np.uint8),
    }


class WriterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="vitreg-states-")
        self.url = f"{self.folder}/s.zarr"
        self.root = create_store(self.url, geometry=GEOM, n_rows=N_ROWS, chunk_rows=CHUNK,
                                 specs=arrays_for([], "all"), attrs=synthetic_attrs(GEOM))
        self.writer = ChunkWriter(self.root, NAMES, max_pending=1)
        self.given = np.zeros(N_ROWS, dtype=bool)  # rows handed to the live writer

    def pending_rows(self) -> np.ndarray:
        on_disk = self.root["status"][:] != 0
        return np.flatnonzero(~on_disk & ~self.given)

    @precondition(lambda self: len(self.pending_rows()) > 0)
    @rule(data=st.data())
    def write_batch(self, data) -> None:
        pending = self.pending_rows()
        size = data.draw(st.integers(1, min(6, len(pending))))
        rows = np.sort(np.asarray(data.draw(st.permutations(pending)))[:size])
        self.writer.put(rows, row_values(rows))
        self.given[rows] = True

    @rule()
    def crash_and_resume(self) -> None:
        self.writer.abort()
        self.root = open_group(self.url, mode="r+")
        self.writer = ChunkWriter(self.root, NAMES, max_pending=1)
        self.given[:] = False

    @rule()
    def finish_written_chunks(self) -> None:
        """Closing writes every chunk whose rows were all given; the rest are refused."""
        on_disk = self.root["status"][:] != 0
        whole = [
            (start, min(start + CHUNK, N_ROWS)) for start in range(0, N_ROWS, CHUNK)
            if (self.given | on_disk)[start:start + CHUNK].all()
        ]
        try:
            self.writer.close()
        except RuntimeError as exc:
            assert "never completed" in str(exc)
        self.root = open_group(self.url, mode="r+")
        status = self.root["status"][:]
        for start, stop in whole:
            assert (status[start:stop] == 1).all(), f"rows {start}:{stop} were lost"
        self.writer = ChunkWriter(self.root, NAMES, max_pending=1)
        self.given[:] = False

    @invariant()
    def rows_on_disk_are_whole_chunks_with_the_right_values(self) -> None:
        status = self.root["status"][:]
        for start in range(0, N_ROWS, CHUNK):
            chunk = status[start:start + CHUNK]
            assert chunk.min() == chunk.max(), f"chunk at {start} is torn: {chunk}"
        ok = np.flatnonzero(status == 1)
        if len(ok):
            expected = row_values(ok)
            for name in ("norms", "tokens", "key"):
                np.testing.assert_array_equal(self.root[name][:][ok], expected[name], err_msg=name)

    def teardown(self) -> None:
        self.writer.abort()
        shutil.rmtree(self.folder, ignore_errors=True)


WriterMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWriterStates = WriterMachine.TestCase
