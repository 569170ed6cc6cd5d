"""`python -m tap_analytics.sandbox`: serve all three APIs (+ SFTP) until interrupted.

Writes the matching tap config as JSON (--config-out) and, with --meltano-env, a file of
`TAP_ANALYTICS_*` environment variables that Meltano reads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.core import Faults


def _flatten_env(config: dict, prefix: str = "TAP_ANALYTICS") -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}_{key.upper()}"
        if isinstance(value, dict) and key != "query":
            env.update(_flatten_env(value, name))
        elif isinstance(value, (dict, list)):
            env[name] = json.dumps(value)
        else:
            env[name] = str(value)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="data volume multiplier")
    parser.add_argument("--services", default="alation,scuba,insights")
    parser.add_argument("--config-out", help="write the tap config JSON here")
    parser.add_argument("--error-rate", type=float, default=0.0,
                        help="probability (0..1) of a 500/502/503 answer per request")
    parser.add_argument("--reset-rate", type=float, default=0.0,
                        help="probability (0..1) of a connection reset per request")
    parser.add_argument("--malformed-rate", type=float, default=0.0,
                        help="probability (0..1) of a 200 JSON body cut in half")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="added to every answer, e.g. 0.1 for a realistic remote API")
    parser.add_argument("--no-end-date", action="store_true")
    parser.add_argument("--run-seconds", type=float, default=0.0,
                        help="stop by itself after this long (0: until interrupted)")
    args = parser.parse_args(argv)

    faults = None
    if args.error_rate or args.reset_rate or args.malformed_rate or args.latency:
        faults = Faults(error_rate=args.error_rate, reset_rate=args.reset_rate,
                        malformed_rate=args.malformed_rate, latency_seconds=args.latency,
                        seed=args.seed)
    sandbox = Sandbox(seed=args.seed, scale=args.scale,
                      services=[s for s in args.services.split(",") if s], faults=faults)
    sandbox.start()
    config = sandbox.config(end_date=not args.no_end_date)
    text = json.dumps(config, indent=2)
    if args.config_out:
        tmp = f"{args.config_out}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.config_out)
        print(f"sandbox: config written to {args.config_out}", flush=True)
    else:
        print(text, flush=True)
    for name, service in sandbox.services.items():
        print(f"sandbox: {name} on {service.url}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + args.run_seconds if args.run_seconds else None
    while not stop.wait(0.5):
        if deadline and time.monotonic() > deadline:
            break
    sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
