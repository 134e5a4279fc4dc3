"""The Python client against a real hub and a real Rust worker."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import uuid

import httpx
import pytest

import sheratan
from sheratan import _wire
from conftest import cli, start_hub


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


def stop(hub) -> None:
    hub.process.terminate()
    hub.process.wait(timeout=30)


def test_an_oversized_body_is_payload_too_large(hub):
    with sheratan.Client(hub.data_url, hub.token) as client:
        for _ in range(20):
            with pytest.raises(sheratan.PayloadTooLarge) as large:
                client.submit("echo", "x" * (2 * 1024 * 1024))
            assert large.value.status == 413


def test_a_badly_signed_result_is_an_integrity_failure(hub):
    with sheratan.Client(hub.data_url, hub.token) as client:
        client.submit("echo", None, queue="q422")
        lease = {"node_id": "py-422", "queues": ["q422"], "capabilities": ["echo"]}
        job = client._do(_wire.Call("data", "POST", "/v1/leases", json=lease))["jobs"][0]
        body = {"job_id": job["job_id"], "lease_id": job["lease_id"], "outcome": "success", "result": 1}
        for key in ("not-the-token", "shtc_" + "0" * 64):
            raw, headers = _wire.signed(body, key)
            headers["Authorization"] = f"Bearer {hub.token}"
            answer = httpx.post(f"{hub.data_url}/v1/results", content=raw, headers=headers)
            with pytest.raises(sheratan.IntegrityFailure) as refused:
                _wire.answer(answer.status_code, answer.content, None)
            assert refused.value.status == 422 and refused.value.code == "RESULT_INTEGRITY_FAIL"
        raw, headers = _wire.signed(body, hub.token)
        headers["Authorization"] = f"Bearer {hub.token}"
        answer = httpx.post(f"{hub.data_url}/v1/results", content=raw, headers=headers)
        assert answer.status_code == 200, answer.text
        assert client.get(job["job_id"])["result"] == 1
        assert client.results(wait=1)[0]["job_id"] == job["job_id"]
        assert client.ack([job["job_id"]]) == 1
        assert client.results() == []


def test_a_join_string_pins_the_ca_and_a_wrong_pin_sends_no_token():
    hub = start_hub({"SHERATAN_TLS": "on"})
    try:
        join = cli(hub, "join-string", "--host", "127.0.0.1").strip()
        assert hub.data_url.startswith("https://")
        with sheratan.Client(join=join) as client:
            assert client.settings.data_url == hub.data_url
            job = client.submit("echo", {"over": "tls"})
            assert client.get(job["job_id"])["status"] == "accepted"
        wrong = join[:5] + "0" * 64 + join[69:]
        with pytest.raises(sheratan.IntegrityFailure) as mismatch:
            sheratan.Client(join=wrong)
        assert "does not match" in mismatch.value.message and "not sent" in mismatch.value.message
        for bad in ("sht1:nonsense", "sht2:" + "0" * 64 + ":t@h:1", join.replace("@", "#")):
            with pytest.raises(sheratan.InvalidRequest):
                sheratan.Client(join=bad)
        # Without the pin, the hub's certificate is not trusted.
        with sheratan.Client(hub.data_url, hub.token) as unpinned:
            with pytest.raises(sheratan.Unavailable) as untrusted:
                unpinned.queues()
            assert "CERTIFICATE_VERIFY_FAILED" in untrusted.value.message
    finally:
        stop(hub)


def test_a_hub_whose_database_is_gone_answers_503_unavailable():
    base = os.environ.get("SHERATAN_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("SHERATAN_TEST_POSTGRES_URL is not set: run ./scripts/test.sh")
    name = f"py503_{os.getpid()}"
    admin = urllib.parse.urlsplit(base)
    url = admin._replace(path=f"/{name}").geturl()

    def psql(sql: str) -> None:
        subprocess.run(["psql", base, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True)

    psql(f"CREATE DATABASE {name}")
    hub = start_hub({"SHERATAN_STORE": url})
    try:
        with sheratan.Client(hub.data_url, hub.token) as client:
            client.submit("echo", None, queue="nobody-serves")
            psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            with pytest.raises(sheratan.Unavailable) as down:
                client.submit("echo", None, queue="nobody-serves")
            assert down.value.status == 503 and down.value.retry_after and down.value.retry_after > 0
            assert down.value.hint
    finally:
        stop(hub)
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_join_answer_must_be_the_one_pinned_certificate_and_ports_must_be_ports():
    from sheratan import join

    hub = start_hub({"SHERATAN_TLS": "on"})
    try:
        with open(os.path.join(hub.home, "tls", "ca.pem")) as f:
            ca = f.read()
        other = start_hub({"SHERATAN_TLS": "on"})
        try:
            with open(os.path.join(other.home, "tls", "ca.pem")) as f:
                impostor = f.read()
        finally:
            stop(other)
        assert join.one_certificate(ca) is not None
        # The pinned CA followed by another one would make both trusted: refused whole.
        assert join.one_certificate(ca + impostor) is None
        assert join.one_certificate(ca + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") is None
        assert join.one_certificate("") is None
        good = cli(hub, "join-string", "--host", "127.0.0.1").strip()
        head, _, port = good.rpartition(":")
        for ports in ("-1", "99999", "+8787", "0", "8787,x"):
            with pytest.raises(sheratan.InvalidRequest):
                join.parse(f"{head}:{ports}")
    finally:
        stop(hub)


def test_a_named_token_file_that_cannot_be_read_is_an_error_not_another_hubs_token(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "hub_token").write_text("the-local-hubs-token\n")
    monkeypatch.delenv("SHERATAN_HUB_TOKEN", raising=False)
    monkeypatch.delenv("SHERATAN_JOIN", raising=False)
    monkeypatch.setenv("SHERATAN_HOME", str(home))
    with sheratan.Client() as local:
        assert local.settings.token == "the-local-hubs-token"
    for named in (tmp_path / "missing", tmp_path / "empty"):
        if named.name == "empty":
            named.write_text("")
        monkeypatch.setenv("SHERATAN_HUB_TOKEN_FILE", str(named))
        with pytest.raises(sheratan.InvalidRequest) as refused:
            sheratan.Client()
        assert str(named) in refused.value.message


def test_submit_many_keeps_one_answer_or_error_per_job_in_order(hub):
    jobs = [{"kind": "echo", "payload": {"i": i}, "queue": "many"} for i in range(250)]
    jobs[7] = {"kind": "", "payload": None, "queue": "many"}  # refused alone: the others go in
    jobs[200] = {"kind": "echo", "payload": {"i": 200}, "queue": "many", "idempotency_key": "k-200"}
    with sheratan.Client(hub.data_url, hub.token) as client:
        first = client.submit("echo", {"i": 200}, queue="many", idempotency_key="k-200")
        outcomes = client.submit_many(jobs, batch_size=40, in_flight=3)
        assert len(outcomes) == 250
        assert isinstance(outcomes[7], sheratan.InvalidRequest) and "kind" in outcomes[7].message
        assert outcomes[200]["code"] == 200 and outcomes[200]["job_id"] == first["job_id"]
        created = [o for i, o in enumerate(outcomes) if i not in (7, 200)]
        assert all(o["code"] == 202 for o in created)
        assert len({o["job_id"] for o in created}) == 248
        # In order: each answer is the job of its place.
        assert client.get(outcomes[123]["job_id"])["payload"] == {"i": 123}
        with pytest.raises(ValueError):
            client.submit_many(jobs, batch_size=1001)
        with pytest.raises(ValueError):
            client.submit_many(jobs, in_flight=0)
        # A whole-request error is raised, not spread over the jobs.
        with sheratan.Client(hub.data_url, "not-the-token-at-all-000") as stranger, pytest.raises(sheratan.AuthFail):
            stranger.submit_many(jobs[:3])


def test_submit_many_reports_a_full_queue_per_job():
    hub = start_hub({"SHERATAN_MAX_QUEUE_DEPTH": "5"})
    try:
        jobs = [{"kind": "echo", "payload": i, "queue": "nobody-serves"} for i in range(12)]

        async def go() -> list:
            async with sheratan.AsyncClient(hub.data_url, hub.token) as client:
                return await client.submit_many(jobs, batch_size=4, in_flight=2)

        import asyncio

        outcomes = asyncio.run(go())
        accepted = [o for o in outcomes if isinstance(o, dict)]
        full = [o for o in outcomes if isinstance(o, sheratan.Backpressure)]
        assert len(accepted) == 5 and len(full) == 7, outcomes
        assert all(o.status == 429 and o.code == "BACKPRESSURE_DROP" for o in full)
    finally:
        stop(hub)
