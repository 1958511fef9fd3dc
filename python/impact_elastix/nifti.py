"""NIfTI-1/-2 (``.nii``, ``.nii.gz``) integrity: the header is one and the voxel data are all there.

elastix (ITK) reads NIfTI itself; a truncated ``.nii.gz`` is read without complaint and registered
as if its missing voxels were there. ``check_nifti`` reads the header and counts the data bytes
(decompressing in chunks, keeping nothing) so that such a file is named before elastix runs.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

_CHUNK = 1 << 22


def _open(path: Path) -> gzip.GzipFile | object:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _expected_size(header: bytes, path: Path) -> int:
    """Header bytes and voxel data together (vox_offset + voxels x bitpix / 8), from either byte order."""
    for order in "<>":
        (size,) = struct.unpack(order + "i", header[:4])
        if size == 348 and len(header) >= 348:  # NIfTI-1
            dims = struct.unpack(order + "8h", header[40:56])
            (bitpix,) = struct.unpack(order + "h", header[72:74])
            (offset,) = struct.unpack(order + "f", header[108:112])
            offset = max(int(offset), 352 if header[344:347] == b"n+1" else 0)
            break
        if size == 540 and len(header) >= 540:  # NIfTI-2
            (bitpix,) = struct.unpack(order + "h", header[14:16])
            dims = struct.unpack(order + "8q", header[16:80])
            (offset,) = struct.unpack(order + "q", header[168:176])
            break
    else:
        raise ValueError(f"{path}: not a NIfTI file (its header does not start with size 348 or 540)")
    if not 1 <= dims[0] <= 7 or any(d < 1 for d in dims[1 : dims[0] + 1]) or bitpix < 1:
        raise ValueError(f"{path}: malformed NIfTI header (dim {list(dims)}, bitpix {bitpix})")
    voxels = 1
    for d in dims[1 : dims[0] + 1]:
        voxels *= d
    return int(offset) + voxels * bitpix // 8


def check_nifti(path: str | Path) -> None:
    """Raises ValueError naming ``path`` when it is not a NIfTI file or its voxel data are cut short.

    A header/image pair (``.hdr`` + ``.img``) is left to ITK.
    """
    path = Path(path)
    try:
        with _open(path) as f:  # type: ignore[attr-defined]
            header = f.read(540)
            if len(header) >= 348 and header[344:347] == b"ni1":
                return  # the voxels are in the .img file beside it
            expected = _expected_size(header, path)
            available = len(header)
            while chunk := f.read(_CHUNK):
                available += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error, struct.error) as e:
        raise ValueError(f"{path}: damaged or truncated compressed data ({e})") from None
    if available < expected:
        raise ValueError(
            f"{path}: {available} bytes of header and voxel data, the NIfTI header promises {expected}: "
            "the file is truncated"
        )
