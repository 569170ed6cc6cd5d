"""The insights API family: settings, client, streams."""

from __future__ import annotations

import typing as t

from tap_analytics.common.config import check_source_block
from tap_analytics.common.errors import ConfigError

if t.TYPE_CHECKING:
    from singer_sdk import Stream, Tap


def discover(tap: Tap) -> list[Stream]:
    """Streams of this family for the tap's config (validated here, one clear line).

    No API call: the field list is fetched only when a report is synced.
    """
    block = tap.config.get("insights")
    if block is None:
        return []  # before the imports: no SFTP stack (paramiko, ~0.1 s) for other families

    from tap_analytics.insights import reports
    from tap_analytics.insights.sftp import load_private_key, parse_host_key
    from tap_analytics.insights.streams import (
        InsightsFieldsStream,
        InsightsReportStream,
    )

    check_source_block(block, "insights", "https://api.intelepeer.com/_rest/v4")
    limit = block.get("max_concurrent_queries")
    if limit is not None and not 1 <= int(limit) <= 2:
        raise ConfigError("insights.max_concurrent_queries",
                          "must be 1 or 2 (the API allows 2 queries in flight per user)")
    for key in ("window_hours", "poll_interval_seconds"):
        if block.get(key) is not None and float(block[key]) <= 0:
            raise ConfigError(f"insights.{key}", "must be greater than 0")
    report_list = block.get("reports") or []
    if not isinstance(report_list, list):
        raise ConfigError("insights.reports", "must be a list of reports")
    names: set[str] = set()
    for index, report in enumerate(report_list):
        reports.check_shape(index, report)
        if report["name"] in names:
            raise ConfigError(f"insights.reports[{index}].name",
                              f"'{report['name']}' is used twice")
        names.add(report["name"])
    if report_list:
        sftp = block.get("sftp")
        if not isinstance(sftp, t.Mapping):
            raise ConfigError("insights.sftp", "is required to download the report files")
        for key in ("host", "username"):
            if not sftp.get(key):
                raise ConfigError(f"insights.sftp.{key}", "is required")
        if not sftp.get("password") and not sftp.get("private_key"):
            raise ConfigError("insights.sftp", "needs a password or a private_key")
        if sftp.get("private_key"):
            load_private_key(sftp["private_key"], sftp.get("private_key_passphrase"))
        if sftp.get("host_key"):
            parse_host_key(sftp["host_key"])
    if report_list and tap.config.get("batch_config"):
        check_batch_support(tap.config["batch_config"])
    streams: list[Stream] = [InsightsFieldsStream(tap)]
    streams += [InsightsReportStream(tap, index=i, report=r) for i, r in enumerate(report_list)]
    return streams


def before_sync(tap: Tap, *, submit: bool = True) -> None:
    """At sync start: the Insights streams move to the end of the sync, and (`submit`)
    their first windows are submitted now, so the queries run on the server while the
    other sources sync (insights/schedule.py)."""
    if tap.config.get("insights") is None:
        return
    from tap_analytics.insights import schedule
    from tap_analytics.insights.streams import (
        InsightsFieldsStream,
        InsightsReportStream,
        shared_api,
    )

    family = (InsightsFieldsStream, InsightsReportStream)
    schedule.sync_last(tap.streams, [s for s in tap.streams.values() if isinstance(s, family)])
    streams = [s for s in tap.streams.values() if isinstance(s, InsightsReportStream)]
    if submit and any(s.selected for s in streams):
        schedule.start(tap, shared_api(tap), streams)


def abandon_early(tap: Tap) -> None:
    """At sync end (done, failed, interrupted): queries nobody took are given up."""
    if tap.config.get("insights") is None:
        return
    from tap_analytics.insights import schedule

    schedule.abandon(tap)


def check_batch_support(batch_config: t.Any) -> None:
    """BATCH mode of the report streams writes its files with pyarrow (an extra)."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        fmt = batch_config.get("encoding", {}).get("format") if isinstance(
            batch_config, t.Mapping) else None
        raise ConfigError("batch_config", f"asks for {fmt or 'BATCH'} files, and the Insights "
                          "report streams write them with pyarrow, which is not installed: "
                          "pip install 'tap-analytics[batch]'")
