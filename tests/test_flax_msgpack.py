"""The jax-free, streaming reader of flax msgpack files (DalleBart and vqgan-jax weights)."""

from __future__ import annotations

import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from flax import serialization

from edalle.models import flax_msgpack
from edalle.models.flax_msgpack import read_msgpack, write_msgpack

TREE = {
    'params': {
        'kernel': np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        'half': np.linspace(-1, 1, 7).astype(np.float16),
        'brain': np.linspace(-2, 2, 5).astype(ml_dtypes.bfloat16),
        'ids': np.arange(5, dtype=np.int32),
    },
    'scalar': np.float32(2.5),
    'count': 3,
    'complex': 1 + 2j,
}


def assert_same(restored: dict, expected: dict) -> None:
    assert restored.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same(restored[key], value)
        elif isinstance(value, np.ndarray):
            assert restored[key].dtype == value.dtype and restored[key].shape == value.shape
            assert np.array_equal(restored[key], value)
        else:
            assert restored[key] == value


def test_reader_agrees_with_flax(tmp_path):
    data = serialization.msgpack_serialize(TREE)
    path = tmp_path / 'flax_model.msgpack'
    path.write_bytes(data)
    assert_same(serialization.msgpack_restore(data), TREE)  # the fixture itself round-trips in flax
    assert_same(read_msgpack(path), TREE)


def test_chunked_arrays_are_joined(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 64)  # 100 float32 → 7 chunks of 16
    tree = {'big': np.arange(100, dtype=np.float32).reshape(10, 10), 'small': np.ones(3, np.float32)}
    path = tmp_path / 'chunked.msgpack'
    path.write_bytes(serialization.msgpack_serialize(tree))
    assert b'__msgpack_chunked_array__' in path.read_bytes()
    assert_same(read_msgpack(path), tree)


def test_reading_a_file_holds_about_one_copy_of_its_arrays(tmp_path):
    """Streaming keeps the peak near the arrays' size; flax's reader, given the whole file, holds it twice."""
    rng = np.random.default_rng(0)
    tree = {f'layer_{i}': rng.standard_normal(2**20, dtype=np.float32) for i in range(16)}  # 16 × 4 MiB
    path = tmp_path / 'model.msgpack'
    path.write_bytes(serialization.msgpack_serialize(tree))
    size = path.stat().st_size

    def peak(read) -> tuple[int, dict]:
        tracemalloc.start()
        try:
            result = read()
            return tracemalloc.get_traced_memory()[1], result
        finally:
            tracemalloc.stop()

    streamed_peak, streamed = peak(lambda: read_msgpack(path))
    whole_peak, whole = peak(lambda: serialization.msgpack_restore(path.read_bytes()))
    assert_same(streamed, tree)
    assert_same(whole, tree)
    largest = 4 * 2**20
    assert streamed_peak < size + 4 * largest  # the arrays, plus one array in the buffer, its payload and its copy
    assert whole_peak > 1.9 * size  # what it replaces: the file's bytes and the arrays at once


def test_a_truncated_file_is_an_error_not_a_partial_tree(tmp_path):
    path = tmp_path / 'cut.msgpack'
    path.write_bytes(serialization.msgpack_serialize(TREE)[:-20])
    with pytest.raises(Exception):  # noqa: B017, PT011 - msgpack raises its own OutOfData / ValueError
        read_msgpack(path)


def test_writer_gives_flax_s_bytes(tmp_path):
    path = tmp_path / 'ours.msgpack'
    write_msgpack(TREE, path)
    assert path.read_bytes() == serialization.msgpack_serialize(TREE)
    assert_same(read_msgpack(path), TREE)


def test_writer_chunks_large_arrays_as_flax_does(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 32)  # 13 chunks: '10' comes after '9', as flax writes them
    monkeypatch.setattr(flax_msgpack, 'CHUNK_BYTES', 32)
    tree = {'big': np.arange(100, dtype=np.float32).reshape(10, 10), 'small': np.ones(3, np.float32)}
    path = tmp_path / 'ours.msgpack'
    write_msgpack(tree, path)
    assert path.read_bytes() == serialization.msgpack_serialize(tree)
    assert_same(read_msgpack(path), tree)


def test_writing_holds_one_leaf_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    tree = {f'layer_{i}': rng.standard_normal(2**20, dtype=np.float32) for i in range(16)}  # 16 × 4 MiB
    largest = 4 * 2**20
    tracemalloc.start()
    try:
        write_msgpack(tree, tmp_path / 'ours.msgpack')
        ours = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        serialization.msgpack_serialize(tree)
        theirs = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ours < 8 * largest  # the leaf's bytes, its payload, its packed ext and the packer's buffer
    assert theirs > 32 * largest  # what it replaces builds the whole file in memory, twice
