"""singer-sdk's standard tap tests against a sandbox that serves only Alation."""

from __future__ import annotations

import atexit

from singer_sdk.testing import get_tap_test_class

from tap_analytics.sandbox import Sandbox
from tap_analytics.tap import TapAnalytics

# The suite needs its config at import time: a module-level sandbox, stopped at exit.
_SANDBOX = Sandbox(seed=11, scale=0.3, services=["alation"]).start()
atexit.register(_SANDBOX.stop)

TestAlationStandard = get_tap_test_class(
    TapAnalytics,
    config=_SANDBOX.config(),
    parse_env_config=False,
)
