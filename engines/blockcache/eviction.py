"""Region eviction policies: which sealed region BlockCache reclaims next.

Owns the order of sealed regions, as per-region numpy arrays (a sequence number and, for
segmented FIFO, a segment); knows nothing of items or I/O. The surprise: hits move whole
regions, not items. ``lru`` bumps a region to the young end on every hit; ``sfifo``
promotes a hit region one segment up, and within a segment the order stays FIFO.

* ``fifo``: the region sealed longest ago goes first (hits change nothing). The lowest
  write amplification: regions are reclaimed in the order they were written.
* ``lru``: the region least recently sealed or hit goes first.
* ``sfifo``: segmented FIFO with ``segment_ratio`` (lowest segment first, e.g. (1, 1) or
  (2, 1, 1)). A sealed region enters the tail of segment 0; a hit on a region below the
  top segment moves it to the tail of the next segment up. Segment ``i >= 1`` holds at
  most ``ratio[i] / sum(ratio)`` of the sealed regions: an overfull segment demotes its
  head to the tail of the segment below. Eviction takes the head of the lowest non-empty
  segment. Navy's segmented FIFO places regions by the priority of what was written into
  them (one buffer per priority); with one buffer, this one lets hits set the priority.

Choosing a victim is an argmin over the regions: O(regions) per reclaim, a few
microseconds for thousands of regions.
"""
from __future__ import annotations

import numpy as np

POLICIES = ("fifo", "lru", "sfifo")
_NEVER = np.iinfo(np.int64).max


class Eviction:
    """``fifo`` and, with ``bump_on_hit``, ``lru``; the base of ``SegmentedFifo``."""

    name = "fifo"

    def __init__(self, nregions: int, bump_on_hit: bool = False) -> None:
        self.nregions = nregions
        self.bump_on_hit = bump_on_hit
        if bump_on_hit:
            self.name = "lru"
        self.seq = np.zeros(nregions, np.int64)
        self.tracked = np.zeros(nregions, bool)
        self.tick = 0

    def _next(self) -> int:
        self.tick += 1
        return self.tick

    def track(self, region: int) -> None:
        """A region was sealed: it joins the young end."""
        self.tracked[region] = True
        self.seq[region] = self._next()

    @property
    def hears_hits(self) -> bool:
        """Whether ``touch`` can change anything (a caller may skip it when not)."""
        return self.bump_on_hit

    def touch(self, region: int) -> None:
        """A lookup hit an item of ``region``."""
        if self.bump_on_hit and self.tracked[region]:
            self.seq[region] = self._next()

    def forget(self, region: int) -> None:
        """A region left the order (it is being reclaimed)."""
        self.tracked[region] = False

    def __len__(self) -> int:
        return int(self.tracked.sum())

    def victim(self) -> int:
        """The region to reclaim next. ValueError if no region is sealed."""
        return self._oldest(self.tracked)

    def _oldest(self, mask: np.ndarray) -> int:
        if not mask.any():
            raise ValueError("eviction: no sealed region to reclaim")
        return int(np.where(mask, self.seq, _NEVER).argmin())

    def order(self) -> list[int]:
        """Sealed regions, next victim first."""
        r = np.flatnonzero(self.tracked)
        return [int(x) for x in r[np.argsort(self.seq[r], kind="stable")]]

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict:
        return {"policy": self.name, "tick": self.tick, "seq": self.seq.astype("<i8").tobytes(),
                "tracked": self.tracked.astype(np.uint8).tobytes()}

    def load_state(self, state: dict) -> None:
        """Restore ``to_state()`` (of any policy; extra fields are ignored). ValueError if
        it does not describe ``nregions`` regions."""
        tick = state["tick"]
        seq = np.frombuffer(state["seq"], "<i8").astype(np.int64)
        tracked = np.frombuffer(state["tracked"], np.uint8)
        if len(seq) != self.nregions or len(tracked) != self.nregions or tracked.max(initial=0) > 1:
            raise ValueError(f"eviction: state is not for {self.nregions} regions")
        if not isinstance(tick, int) or tick < 0 or (len(seq) and int(seq.max()) > tick):
            raise ValueError("eviction: bad tick")
        self.tick = tick
        self.seq = seq
        self.tracked = tracked.astype(bool)


class SegmentedFifo(Eviction):
    """``sfifo``; see the module docstring."""

    name = "sfifo"

    def __init__(self, nregions: int, segment_ratio: tuple[int, ...] = (1, 1)) -> None:
        super().__init__(nregions)
        self.ratio = tuple(segment_ratio)
        self.seg = np.zeros(nregions, np.int8)
        self.counts = [0] * len(self.ratio)

    def track(self, region: int) -> None:
        super().track(region)
        self.seg[region] = 0
        self.counts[0] += 1
        self._rebalance()

    @property
    def hears_hits(self) -> bool:
        return True

    def touch(self, region: int) -> None:
        s = int(self.seg[region])
        if self.tracked[region] and s < len(self.ratio) - 1:
            self.seg[region] = s + 1
            self.seq[region] = self._next()
            self.counts[s] -= 1
            self.counts[s + 1] += 1
            self._rebalance()

    def forget(self, region: int) -> None:
        if self.tracked[region]:
            self.counts[int(self.seg[region])] -= 1
        super().forget(region)
        self._rebalance()

    def _rebalance(self) -> None:
        n = sum(self.counts)
        total = sum(self.ratio)
        for s in range(len(self.ratio) - 1, 0, -1):
            quota = n * self.ratio[s] // total
            while self.counts[s] > quota:
                head = self._oldest(self.tracked & (self.seg == s))
                self.seg[head] = s - 1
                self.seq[head] = self._next()
                self.counts[s] -= 1
                self.counts[s - 1] += 1

    def victim(self) -> int:
        for s, n in enumerate(self.counts):
            if n:
                return self._oldest(self.tracked & (self.seg == s))
        raise ValueError("eviction: no sealed region to reclaim")

    def segment(self, region: int) -> int:
        return int(self.seg[region])

    def order(self) -> list[int]:
        r = np.flatnonzero(self.tracked)
        return [int(x) for x in r[np.lexsort((self.seq[r], self.seg[r]))]]

    def to_state(self) -> dict:
        s = super().to_state()
        s["seg"] = self.seg.astype(np.int8).tobytes()
        return s

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        raw = state.get("seg")
        seg = np.frombuffer(raw, np.int8).astype(np.int8) if raw is not None else np.zeros(self.nregions, np.int8)
        if len(seg) != self.nregions or seg.min(initial=0) < 0:
            raise ValueError(f"eviction: segments are not for {self.nregions} regions")
        self.seg = np.minimum(seg, len(self.ratio) - 1).astype(np.int8)
        self.counts = [int(((self.seg == s) & self.tracked).sum()) for s in range(len(self.ratio))]
        self._rebalance()


def make(policy: str, nregions: int, segment_ratio: tuple[int, ...] = (1, 1)) -> Eviction:
    if policy == "fifo":
        return Eviction(nregions)
    if policy == "lru":
        return Eviction(nregions, bump_on_hit=True)
    if policy == "sfifo":
        return SegmentedFifo(nregions, segment_ratio)
    raise ValueError(f"eviction = {policy!r}: use one of {', '.join(POLICIES)}")
