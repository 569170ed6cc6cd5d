"""A local stand-in for Alation, Scuba/Interana and IntelePeer Insights (+ SFTP).

    with Sandbox(seed=7) as sb:
        config = sb.config()          # a tap config pointing at the sandbox
        sb.alation.add_newer_records(5)

Each service listens on its own 127.0.0.1 port and serves generated, deterministic data
for the time range DATA_START..DATA_END.
"""

from __future__ import annotations

import datetime as dt
import importlib
import typing as t

from tap_analytics.sandbox.core import Faults, Service, ServiceServer

DATA_START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
DATA_END = dt.datetime(2024, 1, 8, tzinfo=dt.timezone.utc)

ALATION_TOKEN = "sandbox-alation-token-2abcd"
SCUBA_TOKEN = "sandbox-scuba-token-san+asl"
INSIGHTS_TOKEN = "sandbox-insights-token-0sjey2"
SFTP_PASSWORD = "sandbox-sftp-password-9f3k"

# name -> (module, class)
SERVICES = {
    "alation": ("tap_analytics.sandbox.alation", "AlationService"),
    "scuba": ("tap_analytics.sandbox.scuba", "ScubaService"),
    "insights": ("tap_analytics.sandbox.insights", "InsightsService"),
}


class Sandbox:
    """Starts the requested services on loopback; `config()` is the matching tap config."""

    def __init__(
        self,
        *,
        seed: int = 7,
        scale: float = 1.0,
        services: t.Iterable[str] = ("alation", "scuba", "insights"),
        ports: dict[str, int] | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.seed = seed
        self.scale = scale
        self.names = list(services)
        self.ports = ports or {}
        self.faults = faults
        self.services: dict[str, Service] = {}
        self._servers: list[ServiceServer] = []

    def start(self) -> Sandbox:
        for name in self.names:
            module_name, class_name = SERVICES[name]
            cls = getattr(importlib.import_module(module_name), class_name)
            service = cls(seed=self.seed, scale=self.scale)
            if self.faults is not None:
                service.faults = self.faults.copy()
            server = ServiceServer(service, port=self.ports.get(name, 0)).start()
            self._servers.append(server)
            self.services[name] = service
            starter = getattr(service, "start_extra", None)
            if starter:  # e.g. the Insights SFTP server
                starter()
        return self

    def stop(self) -> None:
        for service in self.services.values():
            stopper = getattr(service, "stop_extra", None)
            if stopper:
                stopper()
        for server in self._servers:
            server.stop()
        self._servers.clear()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alation(self) -> t.Any:
        return self.services["alation"]

    @property
    def scuba(self) -> t.Any:
        return self.services["scuba"]

    @property
    def insights(self) -> t.Any:
        return self.services["insights"]

    def config(self, *, end_date: bool = True) -> dict[str, t.Any]:
        """A tap config for this sandbox: start/end dates plus one block per service."""
        config: dict[str, t.Any] = {"start_date": DATA_START.isoformat().replace("+00:00", "Z")}
        if end_date:
            config["end_date"] = DATA_END.isoformat().replace("+00:00", "Z")
        for name, service in self.services.items():
            config[name] = service.config_block()  # type: ignore[attr-defined]
        return config
