"""Built-in feature extractors: names the elastix component computes itself, with no model file.

``MIND/R<r>D<d>`` and ``MIND-SSC/R<r>D<d>`` (e.g. ``MIND/R1D2``) in ``ModelsPath`` select the
component's C++ MIND / MIND-SSC, equal to :class:`impact_elastix.models.MIND` to 1e-5. A file that
exists at such a path is loaded as a TorchScript model instead. Torch-free.
"""

from __future__ import annotations

import re
from pathlib import Path

_PATTERN = re.compile(r"^(MIND|MIND-SSC)/R([1-9][0-9]*)D([1-9][0-9]*)$", re.IGNORECASE)


def builtin_name(name: str | Path) -> str | None:
    """The canonical spelling (``"MIND/R1D2"``) when ``name`` selects a built-in extractor, else None."""
    text = str(name)
    match = _PATTERN.match(text)
    if match is None or Path(text).is_file():
        return None
    family, radius, dilation = match.groups()
    return f"{family.upper()}/R{radius}D{dilation}"
