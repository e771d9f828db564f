"""An opt-in event-loop lag monitor: how long the bot's loop was unable to run a ready callback.

The bot promises that nothing stalls its event loop (no model code, SQLite off the loop); this measures it.
`EDALLE_LOOP_MONITOR=1` starts, inside the bot process,

- a ticker task that sleeps `EDALLE_LOOP_MONITOR_INTERVAL` seconds (default 0.01) and records how late it
  woke up: the lag is the time the loop spent on something else (a blocking call, a long callback, or
  simply a queue of ready callbacks), under-estimated by at most one interval;
- a watchdog thread that, when the ticker is overdue by more than `EDALLE_LOOP_MONITOR_STALL_MS`
  (default 100 ms), grabs the main thread's stack, so a stall names its culprit (a poor man's profiler
  that costs nothing while the loop is healthy).

At shutdown it writes a JSON summary (max and p99 lag, ticks over 50/100 ms, the stalls' stacks) to
`EDALLE_LOOP_MONITOR_FILE` (default `<data dir>/loop-monitor.json`) and logs one line. `bench/bot_load.py`
reads that file. Off by default: it wakes the loop 100 times a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_STALLS_KEPT = 20


class LoopMonitor:
    """Ticker task plus stack-grabbing watchdog thread; `start()` on the running loop, `stop()` to write the summary."""

    def __init__(self, path: Path, *, interval: float = 0.01, stall_ms: float = 100.0) -> None:
        self.path = path
        self.interval = interval
        self.stall = stall_ms / 1000.0
        self.lags: list[float] = []
        self.stalls: list[dict[str, Any]] = []
        self._last_tick = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._main_ident = threading.get_ident()
        self._started = 0.0

    def start(self) -> None:
        self._main_ident = threading.get_ident()
        self._started = self._last_tick = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._tick(), name='edalle-loop-monitor')
        self._thread = threading.Thread(target=self._watch, name='edalle-loop-watchdog', daemon=True)
        self._thread.start()

    async def _tick(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self._last_tick = now = time.monotonic()
            self.lags.append(max(0.0, now - before - self.interval))

    def _watch(self) -> None:
        """Every interval: is the ticker overdue by more than the stall threshold? Then record where the loop is."""
        seen_tick = -1.0
        while not self._done.wait(self.interval):
            last = self._last_tick
            overdue = time.monotonic() - last - self.interval
            if overdue > self.stall and last != seen_tick:
                seen_tick = last  # one stack per stall
                frame = sys._current_frames().get(self._main_ident)
                stack = traceback.format_stack(frame) if frame is not None else []
                if len(self.stalls) < MAX_STALLS_KEPT:
                    self.stalls.append({'at_s': round(last - self._started, 3), 'stack': [s.rstrip() for s in stack[-12:]]})

    def summary(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        ms = [lag * 1000.0 for lag in lags]

        def pct(q: float) -> float:
            return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2) if ms else 0.0

        return {
            'interval_ms': self.interval * 1000.0,
            'ticks': len(ms),
            'seconds': round(time.monotonic() - self._started, 3),
            'max_lag_ms': round(ms[-1], 2) if ms else 0.0,
            'p50_lag_ms': pct(0.50),
            'p99_lag_ms': pct(0.99),
            'ticks_over_50ms': sum(1 for v in ms if v > 50.0),
            'ticks_over_100ms': sum(1 for v in ms if v > 100.0),
            'stall_threshold_ms': self.stall * 1000.0,
            'stalls': self.stalls,
        }

    async def stop(self) -> dict[str, Any]:
        self._done.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            self._thread.join(1.0)
        summary = self.summary()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(summary, indent=1))
        except OSError as exc:
            log.warning('loop monitor: could not write %s: %s', self.path, exc)
        log.info(
            'loop monitor: max lag %.1f ms, p99 %.1f ms over %d ticks (%d over 100 ms) -> %s',
            summary['max_lag_ms'],
            summary['p99_lag_ms'],
            summary['ticks'],
            summary['ticks_over_100ms'],
            self.path,
        )
        return summary


def start_loop_monitor(env: Mapping[str, str], data_dir: Path) -> LoopMonitor | None:
    """Start a monitor on the running loop when `EDALLE_LOOP_MONITOR` is 1 (else None)."""
    if env.get('EDALLE_LOOP_MONITOR', '').strip().lower() not in ('1', 'true', 'yes', 'on'):
        return None
    path = Path(env.get('EDALLE_LOOP_MONITOR_FILE', '').strip() or data_dir / 'loop-monitor.json')
    monitor = LoopMonitor(
        path,
        interval=float(env.get('EDALLE_LOOP_MONITOR_INTERVAL', '').strip() or 0.01),
        stall_ms=float(env.get('EDALLE_LOOP_MONITOR_STALL_MS', '').strip() or 100.0),
    )
    monitor.start()
    return monitor
