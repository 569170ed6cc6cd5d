"""TapAnalytics: settings schema and stream discovery, one line per source."""

from __future__ import annotations

import logging
import sys
import typing as t

import requests
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities
from singer_sdk.plugin_base import _ConfigInput

from tap_analytics import alation, insights, scuba
from tap_analytics.alation.settings import SETTINGS as ALATION_SETTINGS
from tap_analytics.common.errors import (
    SECRET_WORDS,
    ConfigError,
    TapAnalyticsError,
    config_secrets,
    one_line,
    redact,
)
from tap_analytics.common.fastpath import FastSingerWriter
from tap_analytics.insights.settings import SETTINGS as INSIGHTS_SETTINGS
from tap_analytics.scuba.settings import SETTINGS as SCUBA_SETTINGS

class TapAnalytics(Tap):
    """Singer tap for Scuba/Interana, Alation and IntelePeer Insights."""

    name = "tap-analytics"
    #: msgspec lines, buffered between STATE messages (common/fastpath.py)
    message_writer_class = FastSingerWriter
    package_name = "tap-analytics"

    capabilities: t.ClassVar[list] = [
        TapCapabilities.CATALOG,
        TapCapabilities.DISCOVER,
        TapCapabilities.STATE,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.BATCH,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Start of the first sync of every incremental stream (RFC 3339). "
            "Bookmarks take over afterwards.",
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            description="End of the synced time range (RFC 3339). Default: now.",
        ),
        th.Property(
            "ca_bundle",
            th.StringType,
            description="Path to a CA bundle for HTTPS (TLS is always verified).",
        ),
        ALATION_SETTINGS,
        SCUBA_SETTINGS,
        INSIGHTS_SETTINGS,
    ).to_dict()

    #: Set by a stream that stopped cleanly on a limit it cannot wait out (e.g. the
    #: Scuba daily quota): the sync goes on with the other streams, then exits non-zero.
    deferred_errors: list[TapAnalyticsError]

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.deferred_errors = []
        super().__init__(*args, **kwargs)

    def discover_streams(self) -> list[Stream]:
        # Never spends an API query: discovery runs on every invocation.
        return [
            *alation.discover(self),
            *scuba.discover(self),
            *insights.discover(self),
        ]

    # The SDK's own validation messages echo the offending value (a secret, maybe).
    # Checked against singer-sdk 0.54.9: `_validate_config` is the one place config is
    # validated; we re-phrase each error to name the setting, never its value.
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            raise _config_error_from_schema(self.config, self.config_jsonschema) from None

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: _ConfigInput | None = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """As `Tap.invoke`, plus a non-zero exit after a clean, resumable stop."""
        from singer_sdk.helpers._util import load_json  # noqa: PLC0415

        if about:
            cls.print_about(about_format)
            sys.exit(0)
        cls.print_version(print_fn=cls.logger.info)
        config = config or _ConfigInput()
        tap = cls(
            config=config.config,
            state=None if state is None else load_json(state.read()),
            catalog=None if catalog is None else load_json(catalog.read()),
            parse_env_config=config.parse_env,
            validate_config=True,
        )
        tap.sync_all()
        tap.message_writer.flush()  # FastSingerWriter: the last buffered lines
        if tap.deferred_errors:
            raise tap.deferred_errors[0]


def _config_error_from_schema(config: t.Mapping, schema: dict) -> ConfigError:
    """The first schema violation of `config`, as one line naming the setting."""
    from jsonschema import Draft7Validator  # noqa: PLC0415

    validator = Draft7Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path))
    if not errors:
        return ConfigError("config", "is not valid")
    err = errors[0]
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else "?"
        setting = f"{path}.{missing}" if path else missing
        return ConfigError(setting, "is required")
    expected = err.schema.get("type") if isinstance(err.schema, dict) else None
    if err.validator == "type":
        if isinstance(expected, list):
            expected = " or ".join(x for x in expected if x != "null")
        return ConfigError(path or "config", f"must be of type {expected}")
    if err.validator == "enum":
        return ConfigError(path, f"must be one of {err.validator_value}")
    if err.validator == "format":
        return ConfigError(path, f"must be a {err.validator_value}")
    if err.validator == "additionalProperties":
        return ConfigError(path or "config", one_line(err.message.split(" were ")[0], 120))
    return ConfigError(path or "config", f"fails the '{err.validator}' rule")


def _report(exc: BaseException, secrets: list[str]) -> None:
    """Print one clear line for an error and exit non-zero."""
    log = logging.getLogger("tap-analytics")
    if isinstance(exc, TapAnalyticsError):
        line = str(exc)
    elif isinstance(exc, (FatalAPIError, RetriableAPIError)):
        line = str(exc)
    elif isinstance(exc, requests.exceptions.RequestException):
        req = getattr(exc, "request", None)
        where = ""
        if req is not None and getattr(req, "url", None):
            from urllib.parse import urlparse  # noqa: PLC0415

            parsed = urlparse(req.url)
            where = f" {parsed.hostname}:{parsed.port or ''}{parsed.path}"
        line = f"network error{where}: {type(exc).__name__} (retries exhausted)"
    else:
        line = f"unexpected error: {type(exc).__name__}: {one_line(str(exc))}"
        log.debug("traceback", exc_info=exc)
    line = redact(one_line(line, 600), secrets)
    print(f"tap-analytics: error: {line}", file=sys.stderr, flush=True)  # noqa: T201
    sys.exit(1)


def _secrets_from_argv(argv: list[str]) -> list[str]:
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415

    secrets: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv) and argv[i + 1] != "ENV":
            try:
                with open(argv[i + 1], encoding="utf-8") as fh:
                    secrets += config_secrets(json.load(fh))
            except (OSError, ValueError):
                pass
    secrets += [v for k, v in os.environ.items() if k.startswith("TAP_ANALYTICS_") and any(
        w.upper() in k for w in SECRET_WORDS)]
    return secrets


def main() -> None:
    """Console entry point: the SDK CLI, with every failure reduced to one clear line."""
    try:
        TapAnalytics.cli()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001 - the user gets one line, not a traceback
        _report(exc, _secrets_from_argv(sys.argv))


if __name__ == "__main__":
    main()
