"""The Python worker against a real hub: results, failures, retries, cancels, timeouts,
progress, credentials, a Rust worker on the same queue, and `python -m sheratan.worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sheratan
from conftest import cli, rust_worker


class Running:
    """A `Worker` run on a thread of its own for the length of a `with`."""

    def __init__(self, worker: sheratan.Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)

    def __enter__(self) -> sheratan.Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(timeout=40)
        assert not self.thread.is_alive(), "the worker did not stop"


def worker(hub, handlers, **options) -> Running:
    options.setdefault("node_id", "py-worker")
    options.setdefault("lease_wait", 1.0)
    return Running(
        sheratan.Worker(handlers, control_url=hub.control_url, data_url=hub.data_url, token=hub.token, **options)
    )


def until(check, timeout: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout} s")


def test_handlers_results_failures_and_retries(hub):
    attempts: dict[str, int] = {}

    def flaky(payload, job):
        attempts[job.job_id] = job.attempt
        if job.attempt < 2:
            raise ValueError("not yet")
        return {"attempt": job.attempt}

    def broken(payload):
        raise sheratan.Permanent("the input can never work")

    async def add(payload):
        await asyncio.sleep(0)
        return payload["a"] + payload["b"]

    handlers = {"py.add": add, "py.flaky": flaky, "py.broken": broken, "py.not-json": lambda p: object()}
    with worker(hub, handlers), sheratan.Client(hub.data_url, hub.token) as client:
        added = client.submit("py.add", {"a": 2, "b": 3})
        assert client.wait(added["job_id"], timeout=30) == 5
        assert client.get(added["job_id"])["node_id"] == "py-worker"
        flaky_job = client.submit("py.flaky", None, max_attempts=3, retry={"base_ms": 10, "max_ms": 10})
        assert client.wait(flaky_job["job_id"], timeout=30) == {"attempt": 2}
        broken_job = client.submit("py.broken", None, max_attempts=5)
        with pytest.raises(sheratan.JobFailed) as failed:
            client.wait(broken_job["job_id"], timeout=30)
        assert failed.value.job["attempt"] == 1, "a Permanent failure is not retried"
        assert failed.value.message == "the input can never work"
        odd = client.submit("py.not-json", None, max_attempts=5)
        with pytest.raises(sheratan.JobFailed) as not_json:
            client.wait(odd["job_id"], timeout=30)
        assert "not JSON" in not_json.value.message and not_json.value.job["attempt"] == 1
        nodes = {n["node_id"]: n for n in client_nodes(hub)}
        assert nodes["py-worker"]["capabilities"] == sorted(handlers)


def client_nodes(hub):
    with sheratan.Client(hub.data_url, hub.token, control_url=hub.control_url) as client:
        return until(lambda: client.nodes(role="worker"), what="the worker's heartbeat")


def test_a_python_and_a_rust_worker_share_one_queue(hub):
    def echo(payload):
        time.sleep(0.01)  # give the Rust worker its share
        return payload

    rust = rust_worker(hub, "rust-worker", queues="shared")
    try:
        with worker(hub, {"echo": echo}, queues=["shared"]), sheratan.Client(hub.data_url, hub.token) as client:
            outcomes = client.submit_batch([{"kind": "echo", "queue": "shared", "payload": {"i": i}} for i in range(200)])
            ids = [o["job_id"] for o in outcomes]
            results = [client.wait(job_id, timeout=60) for job_id in ids]
            assert results == [{"i": i} for i in range(200)]
            ran_on = {client.get(job_id)["node_id"] for job_id in ids}
            assert ran_on == {"py-worker", "rust-worker"}, ran_on
    finally:
        rust.terminate()
        rust.wait(timeout=30)


def test_a_cancel_stops_the_handler_and_its_late_answer_is_discarded(hub):
    seen = {"async_cancelled": threading.Event(), "sync_saw_cancel": threading.Event()}

    async def forever(payload, job):
        job.progress(0.1, "started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen["async_cancelled"].set()
            raise

    def polite(payload, job):
        job.progress(0.1, "started")
        if job.cancelled.wait(60):
            seen["sync_saw_cancel"].set()
        return "finished anyway"  # discarded: the job was cancelled

    with worker(hub, {"py.forever": forever, "py.polite": polite}), sheratan.Client(hub.data_url, hub.token) as client:
        for kind, flag in (("py.forever", "async_cancelled"), ("py.polite", "sync_saw_cancel")):
            job = client.submit(kind, None)
            until(lambda: (client.get(job["job_id"]).get("progress") or {}).get("message") == "started", what="the start")
            time.sleep(0.7)  # past the 500 ms after which running jobs are watched
            cancelled_at = time.monotonic()
            assert client.cancel(job["job_id"])["status"] == "cancelled"
            assert seen[flag].wait(5), f"{kind}: the handler was not told"
            assert time.monotonic() - cancelled_at < 2.0, f"{kind}: the cancel took too long"
            time.sleep(0.5)
            assert client.get(job["job_id"])["status"] == "cancelled"


def test_a_hanging_handler_is_stopped_at_its_timeout(hub):
    def hangs(payload, job):
        job.cancelled.wait(30)

    with worker(hub, {"py.hangs": hangs}), sheratan.Client(hub.data_url, hub.token) as client:
        job = client.submit("py.hangs", None, timeout_s=1, max_attempts=1)
        started = time.monotonic()
        with pytest.raises(sheratan.JobFailed) as failed:
            client.wait(job["job_id"], timeout=30)
        assert failed.value.message.startswith("TIMEOUT"), failed.value.message
        assert time.monotonic() - started < 5


def test_progress_and_output_are_followed_by_wait(hub):
    def chatty(payload, job):
        for i in range(5):
            job.progress((i + 1) / 5, f"step {i + 1}", output=f"line {i + 1}\n")
            time.sleep(0.3)
        return "done"

    printed: list[str] = []
    values: list[float] = []

    def on_progress(progress, new_output):
        printed.append(new_output)
        values.append(progress.get("value"))

    with worker(hub, {"py.chatty": chatty}), sheratan.Client(hub.data_url, hub.token) as client:
        job = client.submit("py.chatty", None)
        assert client.wait(job["job_id"], timeout=30, on_progress=on_progress) == "done"
        assert "".join(printed) == "".join(f"line {i}\n" for i in range(1, 6))
        assert len(values) >= 2 and values[-1] == 1.0, values
        assert client.get(job["job_id"])["progress"]["message"] == "step 5"


def test_the_asyncio_client(hub):
    async def double(payload):
        return payload * 2

    with worker(hub, {"py.double": double}):
        asyncio.run(use_the_asyncio_client(hub))


async def use_the_asyncio_client(hub):
    async with sheratan.AsyncClient(hub.data_url, hub.token, control_url=hub.control_url) as client:
        job = await client.submit("py.double", 21)
        assert await client.wait(job["job_id"], timeout=30) == 42
        assert [j["job_id"] async for j in client.jobs(kind="py.double")] == [job["job_id"]]
        assert (await client.whoami())["credential"] == "the mesh token"
        assert [n["node_id"] for n in await client.nodes(role="worker")] == ["py-worker"]
        with pytest.raises(sheratan.NotFound):
            await client.get("0190b7a0-0000-7000-8000-000000000000")


def test_a_node_credential_signs_with_its_derived_key_and_acts_as_no_other_node(hub):
    secret = cli(hub, "token", "create", "--role", "node", "--name", "py-node").splitlines()[1].strip()
    assert secret.startswith("shtc_")
    run = Running(
        sheratan.Worker({"echo": lambda p: p}, node_id="py-node", control_url=hub.control_url, data_url=hub.data_url, token=secret, lease_wait=1.0)
    )
    with run, sheratan.Client(hub.data_url, hub.token) as client:
        job = client.submit("echo", {"signed": "hkdf"})
        assert client.wait(job["job_id"], timeout=30) == {"signed": "hkdf"}
    # The same credential under another node's name gets no job.
    with sheratan.Client(hub.data_url, secret) as impostor:
        with pytest.raises(sheratan.Forbidden):
            impostor._do(
                sheratan._wire.Call("data", "POST", "/v1/leases", json={"node_id": "someone-else", "capabilities": ["echo"]})
            )


def test_sigterm_lets_the_running_job_finish_then_exits(hub, tmp_path):
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            import time
            def slow(payload, job):
                job.progress(0.5, "halfway")
                time.sleep(2)
                return "finished"
            handlers = {"py.slow": slow}
            """
        )
    )
    env = {**os.environ, "SHERATAN_HUB_TOKEN": hub.token, "SHERATAN_LOG": "info"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sheratan.worker", "app:handlers", "--node-id", "py-cli", "--queues", "default",
         "--control-url", hub.control_url, "--data-url", hub.data_url, "--lease-wait", "1"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with sheratan.Client(hub.data_url, hub.token) as client:
            job = client.submit("py.slow", None)
            until(lambda: client.get(job["job_id"])["status"] == "in_progress", what="the lease")
            process.send_signal(signal.SIGTERM)
            assert client.wait(job["job_id"], timeout=30) == "finished"
        assert process.wait(timeout=30) == 0
        assert "waiting up to" in process.stderr.read()
    finally:
        process.kill()


def test_a_bad_handlers_argument_is_a_usage_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sheratan.worker", "nosuchmodule:handlers"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "SHERATAN_HUB_TOKEN": "x"},
    )
    assert out.returncode == 2 and "cannot load nosuchmodule:handlers" in out.stderr


def test_bench_workers_runs_python_workers():
    import json

    from conftest import binary

    out = subprocess.run(
        [binary(), "bench", "workers", "--python", sys.executable, "--n", "300", "--workers", "2",
         "--paced-s", "1", "--rate", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["worker"] == "python" and report["n"] == 300 and report["jobs_per_s"] > 0
    assert report["paced_jobs"] >= 10, report


def test_handlers_that_raise_oddly_or_return_nan_fail_the_job_not_the_worker(hub):
    def stops(payload):
        return next(iter([]))  # StopIteration, which a future cannot carry

    def exits(payload):
        raise SystemExit(3)  # a library calling sys.exit

    handlers = {"py.stops": stops, "py.exits": exits, "py.nan": lambda p: float("nan"), "echo": lambda p: p}
    with worker(hub, handlers), sheratan.Client(hub.data_url, hub.token) as client:
        for kind, words, attempt in (("py.stops", "StopIteration", 2), ("py.exits", "SystemExit: 3", 2), ("py.nan", "not JSON", 1)):
            job = client.submit(kind, None, max_attempts=2, retry={"base_ms": 10, "max_ms": 10})
            with pytest.raises(sheratan.JobFailed) as failed:
                client.wait(job["job_id"], timeout=20)
            assert words in failed.value.message, failed.value.message
            assert failed.value.job["attempt"] == attempt
        # The worker is still there.
        job = client.submit("echo", {"still": "here"})
        assert client.wait(job["job_id"], timeout=20) == {"still": "here"}


def test_a_stop_past_the_grace_period_cancels_running_handlers(hub):
    cancelled = threading.Event()

    async def endless(payload):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    run = worker(hub, {"py.endless": endless}, grace=0.5)
    with sheratan.Client(hub.data_url, hub.token) as client:
        with run:
            job = client.submit("py.endless", None)
            until(lambda: client.get(job["job_id"])["status"] == "in_progress", what="the lease")
            stopped = time.monotonic()
        # `with run` returned: the worker stopped, and told its handler.
        assert cancelled.is_set()
        assert time.monotonic() - stopped < 10


def _route_count(hub, route: str) -> float:
    import httpx

    text = httpx.get(f"{hub.data_url}/metrics", headers={"Authorization": f"Bearer {hub.token}"}).text
    prefix = f'sheratan_http_request_duration_seconds_count{{route="{route}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_the_worker_takes_jobs_over_the_stream_and_falls_back_where_it_is_not_served():
    from conftest import start_hub

    def echo(payload, job):
        job.progress(0.5, "half")
        return payload

    for env, streamed in (({}, True), ({"SHERATAN_NO_WORKER_STREAM": "1"}, False)):
        h = start_hub(env)
        try:
            with worker(h, {"echo": echo}) as w, sheratan.Client(h.data_url, h.token) as client:
                outcomes = client.submit_batch([{"kind": "echo", "payload": {"i": i}} for i in range(60)])
                results = [client.wait(o["job_id"], timeout=60) for o in outcomes]
                assert results == [{"i": i} for i in range(60)]
                assert all(client.get(o["job_id"])["attempt"] == 1 for o in outcomes)
                leases, reports = _route_count(h, "POST /v1/leases"), _route_count(h, "POST /v1/results")
                if streamed:
                    assert (leases, reports) == (0.0, 0.0), "everything went over the stream"
                    assert w.use_stream
                else:
                    assert leases > 0 and reports >= 60, (leases, reports)
        finally:
            h.process.terminate()
            h.process.wait(timeout=30)


def test_a_running_job_survives_a_hub_kill_on_the_resumed_stream():
    """The hub is killed (-9) and restarted on the same addresses while a job runs: the worker
    reconnects its stream, resumes the lease there (its 8 s lease is extended every 2.7 s, so
    only on the new connection) and sends the result: the same run completes, not a second
    attempt."""
    from conftest import free_address, start_hub

    addresses = (free_address(), free_address())
    h = start_hub(addresses=addresses)
    started = threading.Event()

    def slow(payload):
        started.set()
        time.sleep(6)
        return {"slept": True}

    def view(client, job_id):
        try:
            return client.get(job_id)
        except sheratan.SheratanError:
            return None  # the hub is down for a moment

    try:
        with worker(h, {"slow": slow}) as w, sheratan.Client(h.data_url, h.token) as client:
            job_id = client.submit("slow", None, timeout_s=8, max_attempts=1)["job_id"]
            until(started.is_set, what="the job starting")
            assert w.use_stream
            h.process.kill()
            h.process.wait(timeout=30)
            h = start_hub(home=h.home, addresses=addresses)
            done = until(lambda: (v := view(client, job_id)) and v["status"] == "completed" and v, timeout=30)
            assert done["attempt"] == 1, done
            assert client.wait(job_id, timeout=10) == {"slept": True}
    finally:
        h.process.terminate()
        h.process.wait(timeout=30)


def test_a_stop_asked_while_the_stream_reconnects_is_answered_on_the_next_connection():
    """The worker stops while its stream is down: the stop goes on the next connection and the
    hub answers `stopped`, instead of the worker waiting out its whole grace period."""
    from conftest import free_address, start_hub
    from sheratan import _stream

    addresses = (free_address(), free_address())
    h = start_hub(addresses=addresses)
    pushed: list[dict] = []

    async def scenario() -> float:
        nonlocal h
        query = {"node_id": "py-stopper", "queues": "default", "capabilities": "echo", "max_jobs": "1"}
        stream = await _stream.Stream.open(
            h.data_url, h.token, True, query, pushed.append, lambda _: None, lambda: None, lambda: []
        )
        h.process.kill()
        h.process.wait(timeout=30)
        lost_by = time.monotonic() + 20
        while stream._ws is not None:  # the loss noticed
            assert time.monotonic() < lost_by, "the stream never noticed the hub was gone"
            await asyncio.sleep(0.01)
        begun = time.monotonic()
        stopping = asyncio.create_task(stream.stop(wait=20))
        await asyncio.sleep(0.2)
        h = await asyncio.to_thread(start_hub, home=h.home, addresses=addresses)
        await stopping
        took = time.monotonic() - begun
        # Asked for a job after the stop: none is pushed.
        with sheratan.Client(h.data_url, h.token) as client:
            client.submit("echo", {})
        await stream.want(1)
        await asyncio.sleep(0.5)
        await stream.close()
        return took

    try:
        took = asyncio.run(scenario())
        assert took < 19, f"the stop was answered only by its timeout ({took:.1f} s)"
        assert pushed == [], pushed
    finally:
        h.process.terminate()
        h.process.wait(timeout=30)
