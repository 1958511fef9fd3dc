"""Real test data: the elastix 5.3.1 source's Testing/Data (Apache-2.0), kept by scripts/deps.sh.

Needs a source checkout (``scripts/deps.sh``): the tests, benchmarks and examples use it; the
installed package does not.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def elastix_testing_data() -> Path:
    """``Testing/Data`` of the elastix source unpacked by ``scripts/deps.sh``.

    ``IMPACT_TEST_DATA`` overrides it. Raises FileNotFoundError naming what to run when it is missing.
    """
    override = os.environ.get("IMPACT_TEST_DATA")
    if override:
        return Path(override)
    cache = Path(os.environ.get("IMPACT_DEPS_CACHE", Path.home() / ".cache" / "impact-elastix"))
    sdk = cache / "sdk" / "current"
    marker = sdk / "elastix-source-dir"
    if not marker.exists() and (_REPO / "scripts" / "deps.sh").exists():
        path = subprocess.run(
            ["bash", str(_REPO / "scripts" / "deps.sh"), "--sdk-path"], capture_output=True, text=True
        ).stdout.strip()
        marker = Path(path) / "elastix-source-dir"
    if not marker.exists():
        raise FileNotFoundError(
            "elastix test data not found: run scripts/deps.sh (it unpacks the elastix source), "
            "or set IMPACT_TEST_DATA to a copy of elastix's Testing/Data"
        )
    return Path(marker.read_text().strip()) / "Testing" / "Data"
