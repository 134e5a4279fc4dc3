"""The Python client against a real hub and a real Rust worker."""

from __future__ import annotations

import uuid

import pytest

import sheratan
from conftest import start_hub


def test_submit_wait_get_and_list(hub, worker):
    with sheratan.Client(hub.data_url, hub.token) as client:
        job = client.submit("echo", {"hello": "python"}, queue="default")
        assert job["status"] == "accepted"
        assert client.wait(job["job_id"], timeout=30) == {"hello": "python"}
        view = client.get(job["job_id"])
        assert view["status"] == "completed" and view["node_id"] == "py-test-worker"
        again = client.submit("echo", {"n": 2}, idempotency_key="same")
        twice = client.submit("echo", {"n": 2}, idempotency_key="same")
        assert again["job_id"] == twice["job_id"], "an idempotent repeat is the same job"
        outcomes = client.submit_batch([{"kind": "echo", "payload": {"i": i}} for i in range(5)])
        assert [o["code"] for o in outcomes] == [202] * 5
        seen = {j["job_id"] for j in client.jobs(queue="default", page_size=2)}
        assert job["job_id"] in seen and len(seen) >= 7, "pages are followed to the end"


def test_cancel_and_a_failed_wait(hub):
    with sheratan.Client(hub.data_url, hub.token) as client:
        job = client.submit("echo", None, queue="nobody-serves")
        assert client.cancel(job["job_id"])["status"] == "cancelled"
        with pytest.raises(sheratan.JobFailed) as failed:
            client.wait(job["job_id"], timeout=5)
        assert failed.value.job["status"] == "cancelled"


def test_contract_errors_are_typed(hub):
    with sheratan.Client(hub.data_url, hub.token) as client:
        with pytest.raises(sheratan.InvalidRequest) as bad:
            client.submit("", None)
        assert bad.value.status == 400 and "kind" in bad.value.message and bad.value.hint
        with pytest.raises(sheratan.NotFound):
            client.get(str(uuid.uuid4()))
        # (413 is not asserted here: once in CI, httpx saw the connection end before the 413
        # the hub sends for an oversized body; open in the closing note, tested from Rust in
        # hostile::a_client_still_writing_an_oversized_body_reads_the_413.)
        client.submit("echo", {"n": 1}, idempotency_key="k")
        with pytest.raises(sheratan.Conflict) as collision:
            client.submit("echo", {"n": 2}, idempotency_key="k")
        assert collision.value.code == "IDEMPOTENCY_KEY_COLLISION"
    with sheratan.Client(hub.data_url, "not-the-token") as wrong:
        with pytest.raises(sheratan.AuthFail) as refused:
            wrong.get(str(uuid.uuid4()))
        assert refused.value.status == 403
    with sheratan.Client("http://127.0.0.1:9", hub.token, timeout=2) as nowhere:
        with pytest.raises(sheratan.Unavailable):
            nowhere.queues()


def test_a_full_hub_is_backpressure_with_retry_after():
    hub = start_hub({"SHERATAN_MAX_QUEUE_DEPTH": "1"})
    try:
        with sheratan.Client(hub.data_url, hub.token) as client:
            client.submit("echo", None, queue="nobody-serves")
            with pytest.raises(sheratan.Backpressure) as full:
                client.submit("echo", None, queue="nobody-serves")
            assert full.value.status == 429 and full.value.retry_after and full.value.retry_after > 0
    finally:
        hub.process.terminate()
        hub.process.wait(timeout=30)
