"""`python -m sheratan.worker module:handlers`: a Python worker from the command line. The worker
itself is `sheratan.Worker` (in `_worker`, so that running this module as `__main__` shares its
classes, `Permanent` above all, with the handlers that import `sheratan`)."""

from __future__ import annotations

import logging
import os

from . import errors
from ._worker import Backoff, Job, Permanent, Worker

__all__ = ["Backoff", "Job", "Permanent", "Worker", "main"]


def main(argv: list[str] | None = None) -> int:
    """`python -m sheratan.worker module:handlers [--queues q1,q2] [--concurrency N] ...`: runs a
    worker with the dict[str, Any] `handlers` of `module` (imported from the current directory). The hub is
    found as the `sheratan` CLI finds it: `--join` / `SHERATAN_JOIN`, or `--control-url`,
    `--data-url` and `SHERATAN_HUB_TOKEN`."""
    import argparse
    import importlib
    import sys

    parser = argparse.ArgumentParser(prog="python -m sheratan.worker", description=main.__doc__)
    parser.add_argument("handlers", help="module:attribute naming a dict[str, Any] of kind -> function")
    parser.add_argument("--queues", default=os.environ.get("SHERATAN_QUEUES", "default"))
    parser.add_argument("--node-id", default=os.environ.get("SHERATAN_NODE_ID"))
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("SHERATAN_CONCURRENCY", "4")))
    parser.add_argument("--control-url", default=os.environ.get("SHERATAN_CONTROL_URL"))
    parser.add_argument("--data-url", default=os.environ.get("SHERATAN_DATA_URL"))
    parser.add_argument("--join", default=os.environ.get("SHERATAN_JOIN"))
    parser.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get at a stop")
    parser.add_argument("--lease-wait", type=float, default=10.0, help="seconds a lease call waits for a job")
    args = parser.parse_args(argv)
    # SHERATAN_LOG as the Rust binary reads it (`warn`, `info,sheratan=debug`): its first level.
    level = os.environ.get("SHERATAN_LOG", "info").split(",")[0].split("=")[-1].upper()
    logging.basicConfig(
        level=level if level in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR") else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: the worker says what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    module_name, _, attribute = args.handlers.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        handlers = getattr(importlib.import_module(module_name), attribute or "handlers")
    except (ImportError, AttributeError) as err:
        parser.error(f"cannot load {args.handlers}: {err}")
    if not isinstance(handlers, dict) or not handlers:
        parser.error(f"{args.handlers} is not a dict[str, Any] of kind -> function")
    try:
        worker = Worker(
            handlers,
            queues=[q for q in args.queues.split(",") if q],
            node_id=args.node_id,
            control_url=args.control_url,
            data_url=args.data_url,
            join=args.join,
            concurrency=args.concurrency,
            lease_wait=args.lease_wait,
            grace=args.grace,
        )
    except (errors.SheratanError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    worker.run()
    return 0




if __name__ == "__main__":
    raise SystemExit(main())
