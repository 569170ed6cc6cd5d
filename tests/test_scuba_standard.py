"""singer-sdk's standard tap tests against a sandbox that serves only Scuba."""

from __future__ import annotations

import atexit

from singer_sdk.testing import get_tap_test_class

from tap_analytics.sandbox import Sandbox
from tap_analytics.tap import TapAnalytics

# The suite needs its config at import time: a module-level sandbox, stopped at exit.
_SANDBOX = Sandbox(seed=5, scale=0.5, services=["scuba"]).start()
atexit.register(_SANDBOX.stop)


def _config() -> dict:
    config = _SANDBOX.config()
    # Two one-day windows per windowed stream: every query costs a second of the limiter.
    config["start_date"] = "2024-01-02T00:00:00Z"
    config["end_date"] = "2024-01-04T00:00:00Z"
    config["scuba"]["window_days"] = 1
    return config


TestScubaStandard = get_tap_test_class(
    TapAnalytics,
    config=_config(),
    parse_env_config=False,
)
