"""Percentiles of a few thousand numbers, in plain Python.

`numpy.percentile` gives the same numbers but imports `numpy.ma` on its first
call (through `numpy.unique`): 1.2 MB of resident memory that the agent would
then carry for good, for latency percentiles computed once a minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentiles(samples: Iterable[float], qs: Sequence[float]) -> list[float]:
    """The `qs` percentiles (0 to 100) of `samples`, as `numpy.percentile` computes
    them by default (linear interpolation between the closest ranks, with numpy's
    interpolation formula); [] when there are no samples."""
    ordered = sorted(samples)
    if not ordered:
        return []
    last = len(ordered) - 1
    result = []
    for q in qs:
        rank = last * (q / 100)
        below = min(math.floor(rank), last)
        a, b = ordered[below], ordered[min(below + 1, last)]
        t = rank - below
        # numpy's _lerp: exact at both ends and monotonic in t
        result.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return result
