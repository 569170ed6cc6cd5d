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

    #: Submit the first Insights queries when the sync starts (insights/schedule.py), so
    #: they run on the server while the Alation and Scuba streams sync.
    submit_queries_at_start: t.ClassVar[bool] = True

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

    # singer-sdk 0.54.9: the (final) `sync_all` calls `_set_compatible_replication_methods`
    # once, with state and catalog applied, just before it loops over `self.streams` in
    # order: the one hook for work that must start then (the Insights streams move to the
    # end, their first queries start now). `invoke` abandons what is left at the end.
    def _set_compatible_replication_methods(self) -> None:
        super()._set_compatible_replication_methods()
        insights.before_sync(self, submit=self.submit_queries_at_start)

    # The SDK's own validation messages echo the offending value (a secret, maybe).
    # Checked against singer-sdk 0.54.9: `_validate_config` is the one place config is
    # validated; we re-phrase each error to name the setting, never its value.
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        problem: ConfigError
        try:
            super()._validate_config(raise_errors=True)
            _check_top_level(self.config)
            return []
        except ConfigError as exc:
            problem = exc
        # AttributeError/TypeError: the SDK's default-filling validator trips over a block
        # that is not an object (e.g. "alation": "https://...") before it reports it.
        except (ConfigValidationError, AttributeError, TypeError):
            problem = _config_error_from_schema(self.config, self.config_jsonschema)
        if raise_errors:
            raise problem from None
        self.logger.warning("Config: %s", problem)  # discovery only warns: say what
        return [str(problem)]

    # singer-sdk 0.54.9: on SIGINT/SIGTERM `Tap._handle_termination` writes a last STATE
    # and exits 0, so Meltano reports an interrupted sync as a success. Keep the STATE
    # (it is resumable), but exit 128 + signal number as a shell would.
    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        try:
            super()._handle_termination(signum, frame)
        except SystemExit:
            pass
        message = (f"tap-analytics: error: interrupted by signal {signum}; the last STATE "
                   "written resumes the sync")
        writer = self.message_writer
        if isinstance(writer, FastSingerWriter):
            if writer.writing:  # inside a stdout write that the pipe held up: finish it
                writer.exit_after_write(128 + signum, message)
                return
            writer.flush()
        print(message, file=sys.stderr, flush=True)
        sys.exit(128 + signum)

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
        from singer_sdk.helpers._util import load_json

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
        try:
            tap.sync_all()
        finally:
            insights.abandon_early(tap)  # an early stop: the query workers give up
            # The last buffered lines, also when a stream failed: what was produced before
            # the error goes out (as with the SDK's line-by-line writer); no STATE covers
            # the lines after the last STATE, so the next run reads them again.
            if isinstance(tap.message_writer, FastSingerWriter):
                tap.message_writer.flush()
        if tap.deferred_errors:
            raise tap.deferred_errors[0]


def _check_top_level(config: t.Mapping) -> None:
    """start_date/end_date that the schema types but does not parse; ca_bundle exists."""
    import os

    from tap_analytics.common.timeutil import parse_datetime

    dates = {}
    for key in ("start_date", "end_date"):
        value = config.get(key)
        if value in (None, ""):
            continue
        try:
            if not isinstance(value, str):
                raise ValueError(key)
            dates[key] = parse_datetime(value)
        except ValueError:
            raise ConfigError(
                key, "must be an RFC 3339 date-time such as 2024-01-01T00:00:00Z"
            ) from None
    if len(dates) == 2 and dates["end_date"] <= dates["start_date"]:
        raise ConfigError("end_date", "must be later than start_date")
    ca_bundle = config.get("ca_bundle")
    if isinstance(ca_bundle, str) and ca_bundle and not os.path.isfile(ca_bundle):
        raise ConfigError("ca_bundle", f"no such file: {ca_bundle}")
    batch_config = config.get("batch_config")
    if batch_config:
        from singer_sdk.helpers._batch import BatchConfig

        try:  # the SDK's schema does not require these; BatchConfig does
            BatchConfig.from_dict(batch_config)
        except (TypeError, ValueError, AttributeError):
            raise ConfigError("batch_config", "needs 'encoding' ({\"format\": \"jsonl\" or "
                              "\"parquet\", \"compression\": \"gzip\" or \"none\"}) and "
                              "'storage' ({\"root\": \"file:///dir\" or \"s3://...\"})") from None


def _setting_path(parts: t.Iterable[t.Any]) -> str:
    """Dotted setting name; list items as [i] (scuba.queries[1].name)."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _config_error_from_schema(config: t.Mapping, schema: dict) -> ConfigError:
    """The first schema violation of `config`, as one line naming the setting."""
    from jsonschema import Draft7Validator

    validator = Draft7Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path))
    if not errors:
        return ConfigError("config", "is not valid")
    err = errors[0]
    path = _setting_path(err.absolute_path)
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
    elif isinstance(exc, RetriableAPIError):  # the SDK's bounded retries ran out
        line = f"{exc} (retries exhausted)"
    elif isinstance(exc, FatalAPIError):
        line = str(exc)
    elif isinstance(exc, requests.exceptions.SSLError):
        from tap_analytics.common.http import tls_error_message

        line = tls_error_message(exc)
    elif isinstance(exc, requests.exceptions.RequestException):
        req = getattr(exc, "request", None)
        where = ""
        if req is not None and getattr(req, "url", None):
            from urllib.parse import urlparse

            parsed = urlparse(req.url)
            where = f" {parsed.hostname}:{parsed.port or ''}{parsed.path}"
        line = f"network error{where}: {type(exc).__name__} (retries exhausted)"
    else:
        line = f"unexpected error: {type(exc).__name__}: {one_line(str(exc))}"
        log.debug("traceback", exc_info=exc)
    line = redact(one_line(line, 600), secrets)
    print(f"tap-analytics: error: {line}", file=sys.stderr, flush=True)
    sys.exit(1)


def _secrets_from_argv(argv: list[str]) -> list[str]:
    import json
    import os

    secrets: list[str] = []
    for i, arg in enumerate(argv):
        path = arg.partition("=")[2] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else "")
        if path and path != "ENV":
            try:
                with open(path, encoding="utf-8") as fh:
                    secrets += config_secrets(json.load(fh))
            except (OSError, ValueError):
                pass
    secrets += [v for k, v in os.environ.items() if k.startswith("TAP_ANALYTICS_") and any(
        w.upper() in k for w in SECRET_WORDS)]
    return secrets


def _check_json_files(argv: list[str]) -> None:
    """A --config/--state/--catalog file that is not JSON: one line naming the file
    (the SDK would fail with a bare JSONDecodeError)."""
    import json

    for i, arg in enumerate(argv):
        option, _, value = arg.partition("=")
        if option not in ("--config", "--state", "--catalog"):
            continue
        if not value and i + 1 < len(argv):
            value = argv[i + 1]
        if not value or value == "ENV":
            continue
        try:
            with open(value, encoding="utf-8") as fh:
                json.load(fh)
        except OSError:
            continue  # the CLI reports a missing file itself
        except ValueError as exc:
            where = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
            raise TapAnalyticsError(f"{option} {value}", f"is not valid JSON{where}") from None


def main() -> None:
    """Console entry point: the SDK CLI, with every failure reduced to one clear line."""
    try:
        _check_json_files(sys.argv)
        TapAnalytics.cli()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        _report(exc, _secrets_from_argv(sys.argv))


if __name__ == "__main__":
    main()
