"""MetaImage (.mha/.mhd) files read and written without ITK: the format elastix reads and writes.

Arrays are in NumPy/ITK order, ``(z, y, x[, components])``; geometry vectors are x first, as in ITK.
Spacing and origin are written with ``repr`` so that they survive a round trip bit for bit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ELEMENT_TYPES: dict[str, np.dtype] = {
    "MET_CHAR": np.dtype(np.int8),
    "MET_UCHAR": np.dtype(np.uint8),
    "MET_SHORT": np.dtype(np.int16),
    "MET_USHORT": np.dtype(np.uint16),
    "MET_INT": np.dtype(np.int32),
    "MET_UINT": np.dtype(np.uint32),
    "MET_LONG": np.dtype(np.int64),
    "MET_ULONG": np.dtype(np.uint64),
    "MET_LONG_LONG": np.dtype(np.int64),
    "MET_ULONG_LONG": np.dtype(np.uint64),
    "MET_FLOAT": np.dtype(np.float32),
    "MET_DOUBLE": np.dtype(np.float64),
}
_TYPE_NAMES = {np.dtype(np.int64): "MET_LONG_LONG", np.dtype(np.uint64): "MET_ULONG_LONG"} | {
    v: k for k, v in _ELEMENT_TYPES.items() if v not in (np.dtype(np.int64), np.dtype(np.uint64))
}


def writable(dtype: np.dtype) -> bool:
    """Whether ``write_mha`` stores this pixel type (bool as MET_UCHAR)."""
    dtype = np.dtype(dtype)
    return dtype == np.bool_ or dtype.newbyteorder("=") in _TYPE_NAMES


def index_to_world(index: np.ndarray, origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of voxel indices (N, D) or (D,), x first: origin + direction (spacing * index).

    ``direction``: (D, D), column a = direction of index axis a (ITK's convention). Indices may be
    continuous (a corner between voxels, a landmark).
    """
    return origin + (np.asarray(index, dtype=float) * spacing) @ np.asarray(direction).T


@dataclass(frozen=True)
class Geometry:
    size: np.ndarray  # (D,) voxels, x first
    origin: np.ndarray  # (D,) mm
    spacing: np.ndarray  # (D,) mm
    direction: np.ndarray  # (D, D), column a = direction of index axis a

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates of voxel indices (N, D) or (D,) on this grid (see ``index_to_world``)."""
        return index_to_world(index, self.origin, self.spacing, self.direction)


_MAX_HEADER = 1 << 16  # bytes; a longer "header" is some other file


def _header(path: Path) -> tuple[dict[str, str], int]:
    """Header fields and the byte offset where the data starts (after ``ElementDataFile``)."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            offset += len(raw)
            line = raw.decode("latin-1").strip()
            if "=" not in line or offset > _MAX_HEADER:
                raise ValueError(f"{path}: not a MetaImage header line: {line[:60]!r}")
            key, value = (s.strip() for s in line.split("=", 1))
            fields[key] = value
            if key == "ElementDataFile":
                return fields, offset
    raise ValueError(f"{path}: MetaImage header without ElementDataFile")


def _geometry(fields: dict[str, str], path: Path) -> Geometry:
    try:
        dim = int(fields["NDims"])
        size = np.array([int(v) for v in fields["DimSize"].split()])
        origin = np.array([float(v) for v in fields.get("Offset", fields.get("Origin", "0 " * dim)).split()])
        spacing = np.array(
            [float(v) for v in fields.get("ElementSpacing", fields.get("ElementSize", "1 " * dim)).split()]
        )
        matrix = fields.get("TransformMatrix", fields.get("Rotation", fields.get("Orientation")))
        # ITK writes the direction matrix transposed (column a, the direction of axis a, as row a).
        direction = np.eye(dim) if matrix is None else np.array([float(v) for v in matrix.split()]).reshape(dim, dim).T
    except KeyError as e:
        raise ValueError(f"{path}: MetaImage header without {e.args[0]}") from None
    except ValueError as e:
        raise ValueError(f"{path}: malformed MetaImage header ({e})") from None
    if dim < 1 or len(size) != dim or len(origin) != dim or len(spacing) != dim or (size < 1).any():
        raise ValueError(
            f"{path}: malformed MetaImage header: NDims {dim} with DimSize {fields['DimSize']!r}, "
            f"{len(origin)} origin and {len(spacing)} spacing values"
        )
    return Geometry(size, origin, spacing, direction)


def _element_type(fields: dict[str, str], path: Path) -> np.dtype:
    try:
        dtype = _ELEMENT_TYPES[fields["ElementType"]]
    except KeyError:
        raise ValueError(f"{path}: ElementType {fields.get('ElementType')!r} is not supported") from None
    if fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")).lower() == "true":
        dtype = dtype.newbyteorder(">")
    return dtype


def _shape(fields: dict[str, str], geometry: Geometry) -> tuple[int, ...]:
    components = int(fields.get("ElementNumberOfChannels", "1"))
    return tuple(int(v) for v in reversed(geometry.size)) + ((components,) if components > 1 else ())


def read_geometry(path: str | Path) -> Geometry:
    path = Path(path)
    return _geometry(_header(path)[0], path)


def check_mha(path: str | Path) -> Geometry:
    """The geometry of a MetaImage file whose header is valid and whose voxel data are all there.

    Reads the header and the data's size only (compressed data are decompressed in chunks, not
    kept), so that a truncated or damaged file is named here instead of failing inside elastix.
    """
    path = Path(path)
    fields, offset = _header(path)
    geometry = _geometry(fields, path)
    dtype = _element_type(fields, path)
    expected = int(np.prod(_shape(fields, geometry))) * dtype.itemsize
    source = fields["ElementDataFile"]
    if source.startswith("LIST") or "%" in source:
        return geometry  # data spread over several files: left to ITK
    data = path if source == "LOCAL" else path.parent / source
    if not data.is_file():
        raise FileNotFoundError(f"{path}: its data file {data} does not exist")
    start = offset if source == "LOCAL" else 0
    if fields.get("CompressedData", "False").lower() != "true":
        available = data.stat().st_size - start
    else:
        available, stream = 0, zlib.decompressobj()
        with open(data, "rb") as f:
            f.seek(start)
            try:
                while chunk := f.read(1 << 22):
                    available += len(stream.decompress(chunk))
            except zlib.error as e:
                raise ValueError(f"{path}: its compressed voxel data are damaged ({e})") from None
        if not stream.eof:
            raise ValueError(f"{path}: its compressed voxel data end early (truncated file)")
    if available < expected:
        raise ValueError(
            f"{path}: {available} bytes of voxel data, the header promises {expected} "
            f"(DimSize {fields['DimSize']}, {fields['ElementType']}): the file is truncated"
        )
    return geometry


def read_mha(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """The voxels ``(z, y, x[, c])`` in the file's own type, and the geometry."""
    path = Path(path)
    fields, offset = _header(path)
    geometry = _geometry(fields, path)
    dtype = _element_type(fields, path)
    source = fields["ElementDataFile"]
    payload = path.read_bytes()[offset:] if source == "LOCAL" else (path.parent / source).read_bytes()
    if fields.get("CompressedData", "False").lower() == "true":
        payload = zlib.decompress(payload)
    shape = _shape(fields, geometry)
    count = int(np.prod(shape))
    if len(payload) < count * dtype.itemsize:
        raise ValueError(f"{path}: {len(payload)} data bytes, expected {count * dtype.itemsize}")
    array = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True), geometry


def write_mha(
    path: str | Path,
    array: np.ndarray,
    *,
    spacing: np.ndarray | None = None,
    origin: np.ndarray | None = None,
    direction: np.ndarray | None = None,
    components: int = 1,
    compress: bool = False,
) -> Path:
    """Writes ``array`` ``(z, y, x[, c])`` as one .mha file; ``components`` > 1 makes the last axis the vector."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    if not writable(array.dtype):
        raise TypeError(f"pixel type {array.dtype} cannot be written as MetaImage; use an integer or float type")
    array = array.astype(np.uint8 if array.dtype == np.bool_ else array.dtype.newbyteorder("="), copy=False)
    dim = array.ndim - (1 if components > 1 else 0)
    spacing = np.ones(dim) if spacing is None else np.asarray(spacing, dtype=float)
    origin = np.zeros(dim) if origin is None else np.asarray(origin, dtype=float)
    direction = np.eye(dim) if direction is None else np.asarray(direction, dtype=float).reshape(dim, dim)
    payload = array.tobytes()
    if compress:
        payload = zlib.compress(payload, 1)

    def numbers(values: np.ndarray) -> str:
        return " ".join(repr(float(v)) for v in np.ravel(values))

    header = [
        "ObjectType = Image",
        f"NDims = {dim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compress}",
    ]
    if compress:
        header.append(f"CompressedDataSize = {len(payload)}")
    header += [
        f"TransformMatrix = {numbers(direction.T)}",
        f"Offset = {numbers(origin)}",
        "CenterOfRotation = " + " ".join("0" for _ in range(dim)),
        f"ElementSpacing = {numbers(spacing)}",
        "DimSize = " + " ".join(str(s) for s in reversed(array.shape[:dim])),
    ]
    if components > 1:
        header.append(f"ElementNumberOfChannels = {components}")
    header += [f"ElementType = {_TYPE_NAMES[array.dtype]}", "ElementDataFile = LOCAL"]
    path.write_bytes(("\n".join(header) + "\n").encode() + payload)
    return path
