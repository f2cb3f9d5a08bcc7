"""Parsers for the binary formats of MNIST (idx) and NORB (binary matrix).

Written by hand because torchvision's ``read_sn3_pascalvincent_tensor`` needs an uncompressed file on disk
(we read .gz directly so read-only folders such as a shared dataset store work), and torchvision has no NORB.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from cnnlab.errors import DataError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, name: str = "idx file") -> torch.Tensor:
    """An idx tensor (LeCun's MNIST format: big-endian magic 0x0000TTDD, then DD big-endian int32 sizes)."""
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{name} is not an idx file (bad magic number); it may be damaged or the wrong file.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_IDX_TYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{name} holds {array.size} values but its header says {shape}: the file is truncated.")
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True).reshape(shape))


_NORB_TYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: "<i4", 0x1E3D4C51: "<f4", 0x1E3D4C53: "<f8", 0x1E3D4C56: "<i2"}


def parse_norb_matrix(data: bytes, name: str = "NORB file") -> torch.Tensor:
    """A NORB "binary matrix": little-endian magic, int32 ndim, max(3, ndim) int32 sizes, then the values."""
    if len(data) < 8:
        raise DataError(f"{name} is too short to be a NORB binary matrix.")
    magic, ndim = struct.unpack("<iI", data[:8])
    if magic not in _NORB_TYPES or not 1 <= ndim <= 16:
        raise DataError(f"{name} is not a NORB binary matrix (magic {magic:#x}); it may be damaged.")
    stored = max(3, ndim)  # the format always stores at least three sizes
    shape = struct.unpack(f"<{stored}i", data[8 : 8 + 4 * stored])[:ndim]
    array = np.frombuffer(data, dtype=_NORB_TYPES[magic], offset=8 + 4 * stored)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{name} holds {array.size} values but its header says {shape}: the file is truncated.")
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True).reshape(shape))
