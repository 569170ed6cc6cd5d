"""singer-sdk's standard tap tests against a sandbox that serves only Insights."""

from __future__ import annotations

import atexit
import datetime as dt

from singer_sdk.testing import get_tap_test_class

from tap_analytics.sandbox import DATA_START, Sandbox
from tap_analytics.tap import TapAnalytics

# The suite needs its config at import time: a module-level sandbox, stopped at exit.
_SANDBOX = Sandbox(seed=13, scale=0.5, services=["insights"]).start()
atexit.register(_SANDBOX.stop)
_CONFIG = _SANDBOX.config()
# Two days of two reports keep the suite (several full syncs) quick.
_CONFIG["end_date"] = (DATA_START + dt.timedelta(days=2)).isoformat().replace("+00:00", "Z")

TestInsightsStandard = get_tap_test_class(
    TapAnalytics,
    config=_CONFIG,
    parse_env_config=False,
)
