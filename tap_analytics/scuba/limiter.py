"""Client-side limits for Scuba tokens (1 query/s, 1,000/day): one object per tap run.

`ScubaRuntime` lives on the tap instance (never a module global): every Scuba stream of the
run shares its per-token `QueryLimiter`s, the count of queries sent, and the
"daily quota spent" flag that stops every later Scuba stream without another query.
"""

from __future__ import annotations

import threading
import time
import typing as t
from dataclasses import dataclass, field

from tap_analytics.common.errors import QuotaExhausted

#: Added to the configured spacing: the server timestamps arrivals, not our sends.
SAFETY_MARGIN_SECONDS = 0.1


class QueryLimiter:
    """One query at a time per token, and the next one only `interval` seconds (plus a
    safety margin) after the previous one *ended*.

    Why from the end: the server counts arrivals, and a request arrives somewhere between
    our send and its answer. Spacing from the previous answer (or failure) is the only
    bound that holds whatever the network and server delays; for real queries, which take
    seconds, it costs nothing, and a sandbox answer takes milliseconds.

    `clock` and `sleep` are injectable for unit tests; the wait is computed, not polled, so
    it always ends.
    """

    def __init__(
        self,
        interval: float,
        *,
        margin: float = SAFETY_MARGIN_SECONDS,
        clock: t.Callable[[], float] = time.monotonic,
        sleep: t.Callable[[float], None] = time.sleep,
        assume_recent: bool = True,
    ) -> None:
        self.spacing = max(0.0, float(interval)) + max(0.0, margin)
        self._clock = clock
        self._sleep = sleep
        # A run started right after another one (a schedule of several pipelines, a retry)
        # may follow that run's last query closely: count the limiter's creation (at
        # discovery, before the SDK's set-up) as a query that just ended.
        self._last_end: float | None = clock() if assume_recent else None
        self._in_flight = threading.Lock()
        self.sent = 0
        self.waited = 0.0

    def acquire(self) -> float:
        """Block until a query may be sent (call `release` when it ended); returns the
        seconds waited for spacing."""
        self._in_flight.acquire()
        now = self._clock()
        wait = 0.0 if self._last_end is None else self._last_end + self.spacing - now
        if wait > 0:
            self._sleep(wait)
            self.waited += wait
        self.sent += 1
        return max(wait, 0.0)

    def release(self) -> None:
        """The query ended (answer, error or timeout)."""
        self._last_end = self._clock()
        self._in_flight.release()

    def wrap(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        """`func` between acquire and release: every call (every retry included)."""

        def limited(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.acquire()
            try:
                return func(*args, **kwargs)
            finally:
                self.release()

        return limited


@dataclass
class ScubaRuntime:
    """Per-tap-run Scuba state shared by all Scuba streams."""

    interval: float = 1.0
    limiters: dict[str, QueryLimiter] = field(default_factory=dict)
    exhausted: QuotaExhausted | None = None
    #: Daily limit from the last 429 message ("The request limit of N queries ...").
    daily_limit: int | None = None

    def limiter(self, token: str) -> QueryLimiter:
        found = self.limiters.get(token)
        if found is None:
            found = self.limiters[token] = QueryLimiter(self.interval)
        return found

    @property
    def queries_sent(self) -> int:
        return sum(limiter.sent for limiter in self.limiters.values())


def runtime_for(tap: t.Any, interval: float) -> ScubaRuntime:
    """The tap instance's ScubaRuntime (created on first use)."""
    runtime = getattr(tap, "scuba_runtime", None)
    if not isinstance(runtime, ScubaRuntime):
        runtime = ScubaRuntime(interval=interval)
        tap.scuba_runtime = runtime
    return runtime
