"""Counts of positive values in bounded memory: percentiles and shares of object sizes."""

from __future__ import annotations

import math

import numpy as np


class Histogram:
    """Counts of positive values in log-spaced bins (1/64 octave: ±1.1 %): percentiles and shares
    in bounded memory (11 kB), whatever the number of values."""

    BINS_PER_OCTAVE = 64
    # Sizes as a fraction of an image's longest side: 2^-20 (under a pixel of a 1M px image) to 4
    LOW_OCTAVE, HIGH_OCTAVE = -20, 2

    def __init__(self) -> None:
        self.counts = np.zeros((self.HIGH_OCTAVE - self.LOW_OCTAVE) * self.BINS_PER_OCTAVE, int)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def positions(cls, values: np.ndarray) -> np.ndarray:
        """Where values fall, in bins from the first one's lower edge (unclipped)."""
        with np.errstate(divide="ignore"):
            return (np.log2(np.asarray(values, float)) - cls.LOW_OCTAVE) * cls.BINS_PER_OCTAVE

    @classmethod
    def near_edge(cls, values: np.ndarray, share: float) -> np.ndarray:
        """Which positive values a change of `share` of them could move to another bin."""
        positions = cls.positions(values)
        # a relative change of `share` moves a position by BINS_PER_OCTAVE × log2(1 + share)
        return np.abs(positions - np.round(positions)) <= 2 * cls.BINS_PER_OCTAVE * share

    def add(self, values: np.ndarray) -> None:
        """Count values (0 and below fall into the first bin, too large ones into the last)."""
        position = self.positions(values)
        index = np.clip(np.nan_to_num(position, nan=0, neginf=0), 0, len(self.counts) - 1)
        self.counts += np.bincount(index.astype(int), minlength=len(self.counts))

    def _edge(self, position: float) -> float:
        return 2 ** (self.LOW_OCTAVE + position / self.BINS_PER_OCTAVE)

    def quantile(self, share: float) -> float:
        """The value under which `share` of the values lie (interpolated within its bin)."""
        cumulative = np.cumsum(self.counts)
        wanted = share * cumulative[-1]
        index = int(np.searchsorted(cumulative, wanted))
        before = cumulative[index - 1] if index else 0
        within = (wanted - before) / self.counts[index] if self.counts[index] else 0
        return self._edge(index + within)

    def share_below(self, limit: float) -> float:
        """The share of values under `limit` (interpolated within its bin)."""
        total = self.total
        if not total or limit <= 0:
            return 0.0
        position = (math.log2(limit) - self.LOW_OCTAVE) * self.BINS_PER_OCTAVE
        index = min(max(int(position), 0), len(self.counts))
        below = self.counts[:index].sum()
        if index < len(self.counts):
            below += self.counts[index] * min(max(position - index, 0), 1)
        return float(below / total)
