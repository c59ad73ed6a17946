"""What a run could not keep (frames, audio), gathered while it runs and reported once at the end."""

from __future__ import annotations

import logging

log = logging.getLogger("vidsr")


class LostFrames:
    """Frames the output will not have, by reason, with the times they were at: reported once, at the end."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float, int]]] = {}

    def add(self, reason: str, start: float, end: float | None = None, count: int = 1) -> None:
        self.spans.setdefault(reason, []).append((start, start if end is None else end, count))

    def merge(self, spans: dict[str, list]) -> None:
        """Add the `spans` of another part of the job (a chunk's, as its manifest entry keeps them)."""
        for reason, items in spans.items():
            for start, end, count in items:
                self.add(reason, start, end, count)

    def report(self, name: str) -> None:
        for reason, spans in self.spans.items():
            log.warning("%s: %d %s, at %s", name, sum(c for *_, c in spans), reason, _time_ranges(spans))


def _time_ranges(spans: list[tuple[float, float, int]], shown: int = 5) -> str:
    """`1.00-1.13 s, 2.50 s`: spans less than a quarter second apart merged, the first `shown` listed."""
    merged: list[list[float]] = []
    for start, end, _ in sorted(spans):
        if merged and start - merged[-1][1] < 0.25:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    text = ", ".join(f"{a:.2f} s" if b - a < 0.005 else f"{a:.2f}-{b:.2f} s" for a, b in merged[:shown])
    return text + (f" and {len(merged) - shown} more" if len(merged) > shown else "")
