"""Settings of the `insights` block (IntelePeer Insights)."""

from __future__ import annotations

from singer_sdk import typing as th

REPORT = th.ObjectType(
    th.Property(
        "name",
        th.StringType,
        required=True,
        description="Stream name suffix: the stream is `insights_<name>`.",
    ),
    th.Property(
        "data",
        th.ObjectType(additional_properties=True),
        required=True,
        description='Report shape, as in the API: {"<EventName>": {"fields": [...]}}.',
    ),
    th.Property(
        "filters",
        th.ObjectType(additional_properties=True),
        description='Record filters: {"<EventName>": {"<Field>": {"$eq": ...}}}.',
    ),
    th.Property(
        "scope",
        th.ObjectType(additional_properties=True),
        description="Session scope: {filters: ..., scope: ...} as in the API.",
    ),
    additional_properties=False,
)

SFTP = th.ObjectType(
    th.Property("host", th.StringType, required=True, description="SFTP host of the report files."),
    th.Property("port", th.IntegerType, default=22, description="SFTP port."),
    th.Property("username", th.StringType, required=True, description="SFTP user name."),
    th.Property("password", th.StringType, secret=True, description="SFTP password."),
    th.Property(
        "private_key",
        th.StringType,
        secret=True,
        description="SFTP private key, PEM/OpenSSH text (instead of or besides a password).",
    ),
    th.Property(
        "private_key_passphrase",
        th.StringType,
        secret=True,
        description="Passphrase of the private key, if it has one.",
    ),
    th.Property(
        "host_key",
        th.StringType,
        description="Expected server key, e.g. 'ssh-ed25519 AAAA...'. Without it the tap "
        "warns that the server is not verified.",
    ),
)

SETTINGS = th.Property(
    "insights",
    th.ObjectType(
        th.Property(
            "base_url",
            th.StringType,
            required=True,
            description="API base, e.g. https://api.intelepeer.com/_rest/v4.",
        ),
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Insights API token (Authorization: Bearer <token>).",
        ),
        th.Property(
            "poll_interval_seconds",
            th.NumberType,
            default=10,
            description="Seconds between status polls (grows on long waits).",
        ),
        th.Property(
            "max_poll_interval_seconds",
            th.NumberType,
            default=60,
            description="Upper bound of the status poll interval on long-running queries.",
        ),
        th.Property(
            "query_timeout_seconds",
            th.NumberType,
            default=21600,
            description="Longest wait for one query to finish (also bounds waiting out "
            "HTTP 429 'max concurrent queries'); then a clear error.",
        ),
        th.Property(
            "window_hours",
            th.NumberType,
            default=24,
            description="Size of the report windows a range is split into (hours).",
        ),
        th.Property(
            "max_concurrent_queries",
            th.IntegerType,
            default=2,
            description="Queries in flight at once per token: 1 or 2 (the API allows 2).",
        ),
        th.Property(
            "reports", th.ArrayType(REPORT), required=True, description="One stream per report."
        ),
        th.Property("sftp", SFTP, required=True, description="Where the report files are fetched."),
        th.Property(
            "max_tries",
            th.IntegerType,
            default=5,
            description="Tries per request / download on transient faults.",
        ),
        th.Property(
            "request_timeout_seconds",
            th.IntegerType,
            default=120,
            description="Seconds to wait for one HTTP response.",
        ),
    ),
    description="IntelePeer Insights reports. Absent: no Insights streams.",
)
