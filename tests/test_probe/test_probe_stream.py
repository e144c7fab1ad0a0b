"""Chunk-sized pieces, shuffled chunk order, a bounded shuffle buffer, a
background reader; a NumPy source and the Zarr store give the same stream."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vitreg.cache import open_store
from vitreg.probe.gather import TokenGather, pixel_patches
from vitreg.probe.select import Part, select_tokens
from vitreg.probe.stream import Piece, TokenStream, batches_from, prefetched


@pytest.fixture(scope="module")
def selection(planted):
    store = open_store(planted)
    items = select_tokens(Part("train", store, store.ok_rows(), 98.0), normals=None, seed=0)
    return store, items


class NumpySource:
    """The same arrays held in memory (what the benchmark compares against)."""

    def __init__(self, store, names):
        self.chunk_rows = store.chunk_rows
        self._arrays = {name: store.array(name)[:] for name in names}

    def reader(self, name):
        return self._arrays[name]


def _epoch(stream, seed, batch=50, buffer=300):
    return list(stream.batches(batch, rng=np.random.default_rng(seed), buffer=buffer))


def test_every_item_once_per_epoch_in_a_new_order(selection):
    store, items = selection
    stream = TokenStream(store, items, TokenGather("tokens"), in_memory=False)
    a, b = _epoch(stream, 1), _epoch(stream, 2)
    ya = np.concatenate([p.y for p in a])
    yb = np.concatenate([p.y for p in b])
    assert ya.size == yb.size == len(items)
    assert np.array_equal(np.sort(ya), np.sort(items.fields["patch"]))
    assert not np.array_equal(ya, yb)
    assert all(len(p) == 50 for p in a[:-1])


def test_features_are_the_stored_tokens(selection):
    store, items = selection
    stream = TokenStream(store, items, TokenGather("tokens"), in_memory=False)
    x = np.concatenate([p.x for p in stream.pieces()])
    tokens = store.array("tokens")[:]
    f = items.fields
    assert np.array_equal(x, tokens[f["row"], f["slot"]])


def test_streamed_kept_and_numpy_sources_give_the_same_batches(selection):
    store, items = selection
    gather = TokenGather("tokens")
    streams = [
        TokenStream(store, items, gather, in_memory=False),
        TokenStream(store, items, gather, in_memory=True),
        TokenStream(NumpySource(store, ["tokens"]), items, gather, in_memory=False),
    ]
    epochs = [_epoch(s, 5) for s in streams]
    for other in epochs[1:]:
        assert len(other) == len(epochs[0])
        for p, q in zip(epochs[0], other):
            assert np.array_equal(p.x, q.x) and np.array_equal(p.y, q.y)


def test_shuffle_buffer_is_bounded():
    held = []
    pieces = [Piece(np.arange(s, s + 40)[:, None], np.arange(s, s + 40), np.zeros(40, np.int8))
              for s in range(0, 4000, 40)]

    def watched():
        for p in pieces:
            held.append(p)
            yield p

    out, most = [], 0
    for batch in batches_from(watched(), 32, rng=np.random.default_rng(0), buffer=256):
        emitted = sum(len(b) for b in out) + len(batch)
        most = max(most, sum(len(p) for p in held) - emitted)
        out.append(batch)
    y = np.concatenate([b.y for b in out])
    assert np.array_equal(np.sort(y), np.arange(4000))
    assert most <= 256 + 40  # the buffer plus one piece
    assert not np.array_equal(y, np.arange(4000))


def test_prefetch_raises_the_readers_error():
    def fn(k):
        if k == 3:
            raise KeyError("chunk 3 is gone")
        return k

    with pytest.raises(KeyError, match="chunk 3"):
        list(prefetched(fn, range(10), 2))


def test_closing_the_stream_stops_the_reader():
    before = threading.active_count()
    gen = prefetched(lambda k: k, range(10_000), 2)
    assert next(gen) == 0
    gen.close()
    assert threading.active_count() == before


def test_pixel_patches_cut_the_right_tile():
    pixels = np.arange(2 * 16 * 16 * 3, dtype=np.int64).reshape(2, 16, 16, 3)
    out = pixel_patches(pixels, np.array([1, 0]), np.array([3, 1]), 8, (2, 2))
    assert np.array_equal(out[0], pixels[1, 8:16, 8:16].ravel())
    assert np.array_equal(out[1], pixels[0, 0:8, 8:16].ravel())
