"""Submits N jobs from Python three ways against a fresh hub and prints jobs/s: one `submit`
per job, `submit_many` on one connection at a time, and `submit_many` with batches in flight.
    SHERATAN_BIN=target/release/sheratan python scripts/bench-python-submit.py [N]
(needs the SDK installed: pip install ./clients/python)."""

import os
import subprocess
import sys
import tempfile
import time

import sheratan

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
home = tempfile.mkdtemp(prefix="sheratan-bench-")
hub = subprocess.Popen(
    [os.environ.get("SHERATAN_BIN", "sheratan"), "hub", "--home", home, "--control-addr", "127.0.0.1:0", "--data-addr", "127.0.0.1:0"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    env={**os.environ, "SHERATAN_LOG": "warn", "SHERATAN_MAX_QUEUE_DEPTH": str(10 * n)},
)
data = None
for line in hub.stdout:
    line = line.strip()
    if line.startswith("data plane: "):
        data = line.split()[2]
    if line.startswith("ready:"):
        break
token = open(os.path.join(home, "hub_token")).read().strip()
jobs = [{"kind": "echo", "payload": {"i": i}, "queue": "bench"} for i in range(n)]
try:
    with sheratan.Client(data, token) as client:
        t = time.perf_counter()
        for job in jobs[: n // 4]:
            client.submit(job["kind"], job["payload"], queue=job["queue"])
        print(f"submit, one per job:            {n // 4 / (time.perf_counter() - t):8.0f} jobs/s ({n // 4} jobs)")
        for in_flight in (1, 4):
            t = time.perf_counter()
            out = client.submit_many(jobs, batch_size=100, in_flight=in_flight)
            assert all(isinstance(o, dict) for o in out)
            print(f"submit_many, 100 a batch, {in_flight} in flight: {n / (time.perf_counter() - t):8.0f} jobs/s ({n} jobs)")
finally:
    hub.terminate()
    hub.wait(timeout=30)
