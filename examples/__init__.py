"""Examples and the first-run demo, run from a source checkout (``python -m examples.<name>`` at its root)."""
