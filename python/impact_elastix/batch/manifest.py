"""The cohort manifest: one row per pair (``id, fixed, moving`` and optional files), validated up front."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

REQUIRED = ("id", "fixed", "moving")
OPTIONAL = ("fixed_mask", "moving_mask", "initial_transform", "fixed_landmarks", "moving_landmarks")
# An id names a folder under the output directory: no separators, no dot-only names, no hidden folders.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The batch's own files live beside the pair folders.
RESERVED_IDS = ("summary.csv", "summary.json", "overview.html", "parameters")


class ManifestError(ValueError):
    """A manifest row or column that cannot be used; the message names the row and column."""


@dataclass(frozen=True)
class Pair:
    """One registration of the cohort; paths are absolute once read from a manifest."""

    id: str
    fixed: Path
    moving: Path
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    initial_transform: Path | None = None
    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None

    def files(self) -> dict[str, Path]:
        """The input files by column name (only those given)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "id" and getattr(self, f.name)}


def _pair(row: Mapping[str, str | Path | None], base: Path, where: str) -> Pair:
    unknown = sorted(set(row) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ManifestError(
            f"{where}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED + OPTIONAL)}"
        )
    values: dict[str, str] = {k: str(v).strip() for k, v in row.items() if v is not None and str(v).strip()}
    for column in REQUIRED:
        if column not in values:
            raise ManifestError(f"{where}, column {column}: empty; every row needs {', '.join(REQUIRED)}")
    pair_id = values.pop("id")
    if not _SAFE_ID.match(pair_id) or pair_id in RESERVED_IDS:
        raise ManifestError(
            f"{where}, column id: {pair_id!r} cannot name a folder; use letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit, at most 128 characters), not {', '.join(RESERVED_IDS)}"
        )
    if ("fixed_landmarks" in values) != ("moving_landmarks" in values):
        raise ManifestError(f"{where}: give fixed_landmarks and moving_landmarks together (TRE needs both)")
    paths = {k: Path(v) if Path(v).is_absolute() else (base / v).resolve() for k, v in values.items()}
    return Pair(pair_id, **paths)


def _check_unique(pairs: Sequence[Pair], wheres: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for pair, where in zip(pairs, wheres, strict=True):
        if pair.id in seen:
            raise ManifestError(
                f"{where}, column id: {pair.id!r} is already used ({seen[pair.id]}); ids must be unique"
            )
        seen[pair.id] = where


def read_manifest(path: str | Path) -> list[Pair]:
    """Reads and validates a manifest CSV; relative paths resolve against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)} in the header line {header}")
        reader.fieldnames = header
        rows = [(row, f"{path.name} line {reader.line_num}") for row in reader]
    if not rows:
        raise ManifestError(f"{path}: no pairs (only a header line)")
    for row, where in rows:
        if None in row:  # csv puts surplus fields under the key None
            raise ManifestError(f"{where}: more fields than the {len(header)} columns of the header")
    pairs = [_pair(row, path.parent.resolve(), where) for row, where in rows]
    _check_unique(pairs, [where for _, where in rows])
    return pairs


def as_pairs(pairs: str | Path | Sequence[Pair | Mapping[str, str | Path | None]]) -> list[Pair]:
    """A manifest path, or ``Pair`` objects, or rows as dicts (relative paths: against the working directory)."""
    if isinstance(pairs, str | Path):
        return read_manifest(pairs)
    out, wheres = [], []
    for i, item in enumerate(pairs):
        where = f"pairs[{i}]"
        if isinstance(item, Pair):  # validated like a row: its id still names a folder
            item = {f.name: getattr(item, f.name) for f in fields(item)}
        if isinstance(item, Mapping):
            out.append(_pair(item, Path.cwd(), where))
        else:
            raise TypeError(f"{where}: expected a Pair or a dict of columns, got {type(item).__name__}")
        wheres.append(where)
    if not out:
        raise ManifestError("pairs is empty: nothing to register")
    _check_unique(out, wheres)
    return out
