"""A clock tests can move by hand, for day boundaries and lease expiry without sleeping.

Every store takes `clock=` (a callable returning Unix seconds); production passes `time.time`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ManualClock:
    now: float = 1_800_000_000.0  # 2027-01-15 08:00 UTC: a fixed, ordinary moment

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
