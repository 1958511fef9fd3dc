"""What a person sees of a batch: a progress line on stderr, then summary.csv/.json and overview.html."""

from __future__ import annotations

import csv
import html
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

COLUMNS = (
    "id",
    "status",  # done | failed
    "reused",  # true: finished by an earlier run with the same inputs and maps; nothing ran now
    "attempts",
    "wall_s",
    "peak_rss_mb",
    "memory_estimate_mb",
    "metric",  # elastix's final metric value of the last map
    "tre_before_mm",
    "tre_after_mm",
    "worker",
    "transform",
    "error",
)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``[#####-----] 5/8  done 4  failed 1  running 2  elapsed 0:00:31  ETA 0:00:20``.

    Redrawn in place on a terminal, one line per finished pair otherwise (logs, CI). The ETA is the
    throughput so far (pairs that actually ran, per second of batch time) applied to what is left.
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.done = self.failed = self.running = self.ran = 0
        self.capacity = 0  # Dask: pairs the workers run at once (their starts are not reported)
        self.start = time.perf_counter()

    def started(self) -> None:
        self.running += 1
        self._draw()

    def finished(self, row: dict[str, Any], was_running: bool = True) -> None:
        self.running = max(0, self.running - (1 if was_running else 0))
        if row["status"] == "done":
            self.done += 1
        else:
            self.failed += 1
        self.ran += 0 if row.get("reused") else 1
        self._draw(row)

    def line(self) -> str:
        finished = self.done + self.failed
        if self.capacity:
            self.running = min(self.capacity, self.total - finished)
        width = 20
        bar = "#" * (width * finished // max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        left = self.total - finished
        eta = _clock(elapsed / self.ran * left) if self.ran and left else ("0:00:00" if not left else "--")
        return (
            f"[{bar:-<{width}}] {finished}/{self.total}  done {self.done}  failed {self.failed}  "
            f"running {self.running}  elapsed {_clock(elapsed)}  ETA {eta}"
        )

    def _draw(self, row: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        if self.stream.isatty():
            self.stream.write("\r" + self.line() + "  ")
        elif row is not None:
            self.stream.write(f"{self.line()}  ({row['id']}: {row['status']})\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()


def write_summary(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``summary.csv`` and ``summary.json`` (one row per pair, ``id`` first) and ``overview.html``."""
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    (out / "summary.json").write_text(json.dumps([{k: row.get(k) for k in COLUMNS} for row in rows], indent=1))
    (out / "overview.html").write_text(overview_html(rows))
    return [out / "summary.csv", out / "summary.json", out / "overview.html"]


def _box(values: list[float], x: float, y_of: Any, label: str, color: str) -> str:
    """One box (quartiles, median, min-max whiskers) and its points, in SVG."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    lo, hi = min(values), max(values)
    parts = [
        f'<line x1="{x}" x2="{x}" y1="{y_of(lo):.1f}" y2="{y_of(hi):.1f}" stroke="#444"/>',
        f'<rect x="{x - 30}" y="{y_of(q3):.1f}" width="60" height="{max(y_of(q1) - y_of(q3), 1):.1f}" '
        f'fill="{color}" fill-opacity="0.35" stroke="#444"/>',
        f'<line x1="{x - 30}" x2="{x + 30}" y1="{y_of(median):.1f}" y2="{y_of(median):.1f}" stroke="#000" '
        'stroke-width="2"/>',
        f'<text x="{x}" y="292" text-anchor="middle">{html.escape(label)} (median {median:.2f})</text>',
    ]
    parts += [
        f'<circle cx="{x - 20 + 40 * (i % 7) / 6:.1f}" cy="{y_of(v):.1f}" r="3" fill="{color}"/>'
        for i, v in enumerate(values)
    ]
    return "\n".join(parts)


def _tre_plot(rows: Sequence[dict[str, Any]]) -> str:
    before = [r["tre_before_mm"] for r in rows if r.get("tre_before_mm") is not None]
    after = [r["tre_after_mm"] for r in rows if r.get("tre_after_mm") is not None]
    if not after:
        return "<p>No landmarks given: no TRE.</p>"
    top = max(before + after) * 1.1 or 1.0

    def y_of(v: float) -> float:
        return 270 - 250 * v / top

    ticks = "\n".join(
        f'<line x1="50" x2="400" y1="{y_of(t):.1f}" y2="{y_of(t):.1f}" stroke="#ddd"/>'
        f'<text x="45" y="{y_of(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>'
        for t in (top * i / 5 for i in range(6))
    )
    return (
        '<svg width="420" height="300" font-family="sans-serif" font-size="11">'
        f'<text x="10" y="14">TRE (mm), {len(after)} pairs</text>{ticks}'
        f"{_box(before, 140, y_of, 'before', '#d95f02')}{_box(after, 310, y_of, 'after', '#1b9e77')}</svg>"
    )


def _time_plot(rows: Sequence[dict[str, Any]]) -> str:
    timed = sorted((r for r in rows if r.get("wall_s") is not None), key=lambda r: -r["wall_s"])
    if not timed:
        return "<p>No pair ran.</p>"
    longest = max(r["wall_s"] for r in timed) or 1.0
    bars = "\n".join(
        f'<text x="145" y="{24 + 16 * i}" text-anchor="end">{html.escape(r["id"])}</text>'
        f'<rect x="150" y="{14 + 16 * i}" width="{300 * r["wall_s"] / longest:.1f}" height="12" fill="#7570b3"/>'
        f'<text x="{155 + 300 * r["wall_s"] / longest:.1f}" y="{24 + 16 * i}">{r["wall_s"]:.1f} s'
        f"{' (reused)' if r.get('reused') else ''}</text>"
        for i, r in enumerate(timed)
    )
    return (
        f'<svg width="560" height="{30 + 16 * len(timed)}" font-family="sans-serif" font-size="11">'
        f'<text x="10" y="10">wall time per pair</text>{bars}</svg>'
    )


def overview_html(rows: Sequence[dict[str, Any]]) -> str:
    """A self-contained page: counts, TRE box plot before/after, time per pair, the failed pairs' errors."""
    done = sum(r["status"] == "done" for r in rows)
    failed = [r for r in rows if r["status"] != "done"]
    failures = "".join(
        f"<tr><td>{html.escape(r['id'])}</td><td><pre>{html.escape(str(r.get('error', '')))}</pre></td></tr>"
        for r in failed
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>impact-elastix batch</title></head><body>"
        f"<h1>impact-elastix batch: {len(rows)} pairs, {done} done, {len(failed)} failed</h1>"
        f"{_tre_plot(rows)}{_time_plot(rows)}"
        + (f"<h2>Failed</h2><table border='1'><tr><th>id</th><th>error</th></tr>{failures}</table>" if failed else "")
        + "</body></html>\n"
    )
