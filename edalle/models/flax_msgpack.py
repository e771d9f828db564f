"""Read and write flax.serialization's msgpack files (DalleBart and vqgan-jax weights) without jax.

Format (flax `serialization.py`): a msgpack map tree whose arrays are ext type 1 holding
msgpack `(shape, dtype name, C-order bytes)`, numpy scalars ext type 3 (same payload),
complex numbers ext type 2; arrays over flax's 1 GiB chunk limit are maps marked
`__msgpack_chunked_array__` with `shape` and `chunks` as {'0': …, '1': …}.

flax's own `msgpack_restore` wants the whole file as one `bytes`, and its arrays are views
of per-array copies of it, so reading a checkpoint holds two copies at its peak (3.5 GB for
mini's 1.75 GB file, 2 × 10 GB for mega in float32). `read_msgpack` streams the file
instead: only the arrays stay, plus one array's worth of buffer. `write_msgpack` is the
same in reverse (flax's `msgpack_serialize` builds the whole file in memory, three copies
of mega at its peak) and writes the same bytes as flax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import numpy as np

ARRAY, COMPLEX, SCALAR = 1, 2, 3
CHUNKED = '__msgpack_chunked_array__'
CHUNK_BYTES = 2**30  # flax's MAX_CHUNK_SIZE: larger arrays are stored as chunks of this many bytes
READ_SIZE = 2**20  # larger reads grow the unpacker's buffer past the object being read
MAX_OBJECT = 2**31 - 1  # msgpack's own limit per object; flax chunks arrays at 2**30


def read_msgpack(path: str | Path) -> Any:
    """The tree stored in a flax msgpack file, arrays as read-only numpy arrays, streamed from disk."""
    with open(path, 'rb') as file:
        unpacker = msgpack.Unpacker(
            file,
            ext_hook=_ext_hook,
            raw=False,
            strict_map_key=False,
            read_size=READ_SIZE,
            max_buffer_size=MAX_OBJECT,
        )
        tree = unpacker.unpack()
    return _unchunk(tree)


def write_msgpack(tree: dict, path: str | Path) -> None:
    """Write a tree of dicts with array (numpy or jax), numpy scalar and plain leaves as flax would, one leaf at a time."""
    packer = msgpack.Packer(use_bin_type=True)
    with open(path, 'wb') as file:
        _write(tree, file, packer)


def _write(node: Any, file: Any, packer: msgpack.Packer, *, sort: bool = True) -> None:
    if isinstance(node, dict):
        file.write(packer.pack_map_header(len(node)))
        # flax copies the tree with jax.tree_util first, which sorts dict keys; its chunk maps come later, unsorted
        for key in sorted(node) if sort else node:
            file.write(packer.pack(key))
            _write(node[key], file, packer, sort=sort)
    elif isinstance(node, np.generic):
        file.write(packer.pack(msgpack.ExtType(SCALAR, _array_payload(np.asarray(node)))))
    elif isinstance(node, complex):
        file.write(packer.pack(msgpack.ExtType(COMPLEX, msgpack.packb((node.real, node.imag)))))
    elif hasattr(node, '__array__') and not isinstance(node, (str, bytes)):
        array = np.asarray(node)
        if array.nbytes > CHUNK_BYTES:
            flat = array.reshape(-1)
            step = max(1, CHUNK_BYTES // array.dtype.itemsize)
            chunks = {str(i): flat[start : start + step] for i, start in enumerate(range(0, flat.size, step))}
            shape = {str(i): n for i, n in enumerate(array.shape)}
            _write({CHUNKED: True, 'shape': shape, 'chunks': chunks}, file, packer, sort=False)
        else:
            file.write(packer.pack(msgpack.ExtType(ARRAY, _array_payload(array))))
    else:
        file.write(packer.pack(node))


def _array_payload(array: np.ndarray) -> bytes:
    return msgpack.packb((array.shape, array.dtype.name, array.tobytes('C')), use_bin_type=True)


def _array(payload: bytes) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(payload, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
    if name == 'bfloat16':
        import ml_dtypes  # shipped with jax; numpy has no bfloat16

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(name)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _ext_hook(code: int, payload: bytes) -> Any:
    if code == ARRAY:
        return _array(payload)
    if code == COMPLEX:
        real, imag = msgpack.unpackb(payload)
        return complex(real, imag)
    if code == SCALAR:
        return _array(payload)[()]
    return msgpack.ExtType(code, payload)


def _unchunk(node: Any) -> Any:
    """Join flax's chunked arrays back, in place (the tree's other leaves are not copied)."""
    if not isinstance(node, dict):
        return node
    if CHUNKED in node:
        chunks = node['chunks']
        shape = tuple(node['shape'][str(i)] for i in range(len(node['shape'])))
        return np.concatenate([chunks[str(i)] for i in range(len(chunks))]).reshape(shape)
    for key, value in node.items():
        node[key] = _unchunk(value)
    return node
