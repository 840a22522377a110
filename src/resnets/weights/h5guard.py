"""Refuse HDF5 files that would send libhdf5 into an endless loop, before libhdf5 reads them.

libhdf5 (1.14 and 2.0 alike) reads a global heap collection, where variable-length strings such as
Keras 3 layer names live, object by object, stepping over each object by its recorded size. A free-space
object of size zero makes that step zero: it loops forever, holding the GIL, so no timeout can stop it
(a single damaged byte pair in a Keras 3 ``.weights.h5`` file does it). Collections are checked here
the way libhdf5 walks them, assuming 8-byte lengths (what h5py and Keras always write).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from ..errors import BadWeights

_SIGNATURE = b"GCOL\x01\x00\x00\x00"  # magic, version 1, three reserved bytes
_HEADER = 16  # signature + collection size; each object's header has the same size
_MIN_COLLECTION = 4096  # libhdf5 never writes a smaller collection


def check_global_heaps(data: bytes | mmap.mmap) -> None:
    """Raise ``ValueError`` if a global heap collection in ``data`` would make libhdf5 loop or overrun."""
    pos = data.find(_SIGNATURE)
    while pos != -1:
        size = int.from_bytes(data[pos + 8: pos + 16], "little")
        if _MIN_COLLECTION <= size <= len(data) - pos:  # otherwise 8 stray bytes in tensor data, not a heap
            _check_collection(data, pos, pos + size)
        pos = data.find(_SIGNATURE, pos + 1)


def _check_collection(data: bytes | mmap.mmap, start: int, end: int) -> None:
    p = start + _HEADER
    while p + _HEADER <= end:  # a shorter tail is free space, as libhdf5 reads it
        index = int.from_bytes(data[p: p + 2], "little")
        size = int.from_bytes(data[p + 8: p + 16], "little")
        step = size if index == 0 else _HEADER + (size + 7) // 8 * 8
        if step == 0 or p + step > end:
            raise BadWeights(f"damaged HDF5 global heap at byte {start}: object {index} at byte {p} has size {size}")
        p += step


def check_hdf5_file(path: str | os.PathLike) -> None:
    """:func:`check_global_heaps` on a file, mapped rather than read (Keras files are up to 230 MB)."""
    with open(Path(path), "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            check_global_heaps(data)
