"""Rate limiting of failed debugging-key attempts, per remote address.

An address that has failed ``max_failures`` times within ``window`` seconds is refused before its
key is even looked up, until its oldest failure in the window ages out. A good key does not wipe
the record (otherwise one valid key would unlock unlimited guesses at others).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

#: Addresses remembered at most; the first remembered are forgotten first.
MAX_ADDRESSES = 10_000


class FailedAuthLimiter:
    def __init__(self, max_failures: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max(1, max_failures)
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try a key again (0: it may now)."""
        now = self._clock()
        failures = self._recent(address, now)
        if failures is None or len(failures) < self.max_failures:
            return 0.0
        return max(0.0, self.window - (now - failures[-self.max_failures]))

    def failed(self, address: str) -> None:
        now = self._clock()
        failures = self._recent(address, now)
        if failures is None:
            if len(self._failures) >= MAX_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
            failures = self._failures[address] = deque(maxlen=self.max_failures)
        failures.append(now)
