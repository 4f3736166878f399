"""Counts one process keeps to itself, so that junk costs the store no write.

A storm of malformed or rate-limited submissions from one address must not cost a
durable write each. What this process counts here only ever *skips* writes: whether a
client is over ``rate_limit`` is the store's to say (its counter is shared by every
process and host); once it has said so, this process remembers it until the window
ends. Local refusals (a code that cannot be one) are journaled up to a bound per client
and window, counted here: each process journals at most that many.
"""

from __future__ import annotations

import threading

#: Keys a :class:`LocalCounts` holds at most: a flood from many addresses (an IPv6
#: network has many /64s) cannot make it grow without bound.
SIZE = 65536


class LocalCounts:
    """Counts per key in fixed windows of ``window`` seconds (starting at
    ``now // window * window``, as :meth:`Store.hit` counts), in this process only.

    Holds at most ``size`` keys: when a new key finds it full, the ended windows go, and
    if that frees nothing, everything goes. Forgetting is always safe here: a count
    forgotten costs a write or a store read again, never a wrong answer.
    """

    def __init__(self, size: int = SIZE):
        self._lock = threading.Lock()
        self._size = size
        self._counts: dict[str, tuple[int, int, int]] = {}  # key -> (window, start, count)

    def get(self, key: str, window: int, now: float) -> int:
        """The count of ``key`` in the window holding ``now`` (0 if none)."""
        entry = self._counts.get(key)
        if entry is None or entry[:2] != (window, int(now // window * window)):
            return 0
        return entry[2]

    def add(self, key: str, window: int, now: float) -> int:
        """Count one event for ``key`` in the window holding ``now``; the window's count."""
        start = int(now // window * window)
        with self._lock:
            entry = self._counts.get(key)
            if entry is not None and entry[:2] == (window, start):
                count = entry[2] + 1
            else:
                if entry is None and len(self._counts) >= self._size:
                    self._forget(now)
                count = 1
            self._counts[key] = (window, start, count)
            return count

    def _forget(self, now: float) -> None:
        """Make room: drop the windows that do not hold ``now``, or all if none."""
        for key, (window, start, _) in list(self._counts.items()):
            if not start <= now < start + window:
                del self._counts[key]
        if len(self._counts) >= self._size:
            self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)
