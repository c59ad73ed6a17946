"""Frame timestamps: the frames the demuxer's packets promise, and the stamp each decoded frame takes.

Every video packet sent to the decoder owes one frame, at the packet's timestamp. A decoded frame settles one
debt; a packet that does not decode settles its own (as a reported loss); what is still owed at the end was
lost without a word from the decoder, and is reported with its times. So every frame the input holds is
either written or reported lost, whatever its timestamps are.

Stamps come from the packets in one of two ways. Trusted: a frame keeps its own pts. By order: the frames,
which a decoder gives in presentation order, take the packets' stamps in increasing order, as FFmpeg's
best-effort timestamp does for containers whose pts cannot be trusted: AVI stores no presentation times (its
demuxer numbers a B-frame stream's packets in decode order, so frames came out stamped 1, 3, 4, 2, 6, ...),
elementary streams none at all, and some muxers write decode times as presentation times.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

# Containers whose demuxer gives video packets decode-order numbers as pts.
UNTRUSTED_PTS = {"avi"}


def parse_rate(value: str | float | Fraction | None) -> Fraction | None:
    """A frame rate given as a number or a fraction (24, 29.97, 24000/1001); None stays None. Raises
    ValueError for anything that is not a positive, finite rate."""
    if value is None:
        return None
    try:
        rate = Fraction(str(value).strip()) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError):
        rate = None
    if rate is None or rate <= 0 or rate > 1000:
        raise ValueError(f"expected a frame rate above 0 and up to 1000, as a number or a fraction such as "
                         f"24000/1001 (got {value!r})")
    return rate.limit_denominator(1_000_000)


class FrameClock:
    """The stamps owed by the packets sent so far and the stamp of each frame out (see the module docs).

    `ordered`: stamps by order from the start; a trusted clock turns to stamping by order when a frame's pts
    goes back while the packets' pts never did (decode times written as presentation times). `step`: the
    frame duration in stamp units, for frames with no stamp left to take. `counted`: the frames are numbered
    0, 1, 2, ... whatever their packets say (`--assume-fps`)."""

    def __init__(self, ordered: bool, step: int, counted: bool = False) -> None:
        self.ordered, self.step, self.counted = ordered, step, counted
        self._heap: list[int] = []
        self._owed: Counter[int] = Counter()
        self._unstamped = 0  # packets owed without a timestamp (elementary streams, or counted frames)
        self._settled: set[int] = set()  # stamps of packets reported lost: a frame with one is not new
        self._packets_rise = True  # the packets' stamps never went back (decode order, or no reordering)
        self._last_packet: int | None = None
        self.last: int | None = None  # the latest stamp given
        self.frames = 0

    def owe(self, stamp: int | None) -> None:
        if stamp is None or self.counted:
            self._unstamped += 1
            return
        if self._last_packet is not None and stamp < self._last_packet:
            self._packets_rise = False
        self._last_packet = stamp
        heapq.heappush(self._heap, stamp)
        self._owed[stamp] += 1

    def settle(self, stamp: int | None) -> None:
        """The packet at `stamp`, owed, gives no frame: its loss is reported as such."""
        if stamp is None or self.counted:
            self._unstamped = max(0, self._unstamped - 1)
        else:
            self._take(stamp)
            self._settled.add(stamp)

    def take(self, pts: int | None) -> int | None:
        """The stamp of the next frame out of the decoder, whose own pts is `pts`; None for a frame whose
        packet's loss was already reported (a decoder can still give a picture for a packet it failed)."""
        if pts is not None and pts in self._settled and pts not in self._owed and not self.counted:
            return None
        self.frames += 1
        if self.counted:
            self._take_any()
            return self._give(self.frames - 1)
        if not self.ordered and pts is not None:
            if self.last is not None and pts < self.last and self._packets_rise and self._owed_after(self.last):
                self.ordered = True  # decode times written as pts: from this frame on, stamps by order
                self._take(pts)
            elif self._take(pts):
                return self._give(pts)
            else:  # a pts that no packet had: it settles the oldest debt
                self._take_any()
                return self._give(pts)
        stamp = self._take_any()
        return self._give(self.next_stamp() if stamp is None else stamp)

    def next_stamp(self) -> int:
        """Where a frame after the latest one would be."""
        return 0 if self.last is None else self.last + self.step

    def owed(self, keep: Callable[[int], bool]) -> tuple[list[int], int]:
        """What is still owed: the stamps that `keep` accepts (the range's), and the count without stamps."""
        return sorted(s for s in self._owed.elements() if keep(s)), self._unstamped

    def _give(self, stamp: int) -> int:
        self.last = stamp if self.last is None else max(self.last, stamp)
        return stamp

    def _take(self, stamp: int) -> bool:
        if stamp not in self._owed:
            return False
        self._owed[stamp] -= 1
        if not self._owed[stamp]:
            del self._owed[stamp]
        return True

    def _take_any(self) -> int | None:
        """The smallest stamp owed, or one owed without a stamp (None)."""
        while self._heap:
            stamp = heapq.heappop(self._heap)
            if self._take(stamp):
                return stamp
        self._unstamped = max(0, self._unstamped - 1)
        return None

    def _owed_after(self, stamp: int) -> bool:
        return any(owed > stamp for owed in self._owed)
