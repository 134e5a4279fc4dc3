"""Handlers as `sheratan worker` has them built in, for a Python worker to run without writing
any: `python -m sheratan.worker sheratan.builtin:handlers` (what `sheratan bench workers
--python` starts)."""

from __future__ import annotations

import time
from typing import Any

from ._worker import Job


def echo(payload: Any) -> Any:
    """The payload, back."""
    return payload


def sleep(payload: Any, job: Job) -> dict[str, Any]:
    """Sleeps `payload["ms"]` milliseconds (reporting the fraction slept), stops early when
    cancelled."""
    ms = int((payload or {}).get("ms", 0))
    end = time.monotonic() + ms / 1000
    while (left := end - time.monotonic()) > 0:
        if job.cancelled.wait(min(left, 0.1)):
            break
        job.progress(1 - left / (ms / 1000))
    return {"slept_ms": ms}


handlers = {"echo": echo, "sleep": sleep}
