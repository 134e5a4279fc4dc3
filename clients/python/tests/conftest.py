"""A real `sheratan hub` (and, where a test needs one, a real `sheratan worker`) per test,
from the binary at $SHERATAN_BIN (scripts/test.sh sets it to the one the suite built)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass

import pytest


def binary() -> str:
    path = os.environ.get("SHERATAN_BIN")
    if not path:
        pytest.fail("SHERATAN_BIN is not set: run ./scripts/test.sh, or point it at a sheratan binary")
    return path


@dataclass
class Hub:
    control_url: str
    data_url: str
    token: str
    process: subprocess.Popen
    home: str


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def start_hub(
    env: dict[str, str] | None = None,
    home: str | None = None,
    addresses: tuple[str, str] = ("127.0.0.1:0", "127.0.0.1:0"),
) -> Hub:
    """A hub in a new home, or restarted in `home`; on `addresses` (control, data) if given."""
    home = home or tempfile.mkdtemp(prefix="sheratan-py-")
    process = subprocess.Popen(
        [binary(), "hub", "--home", home, "--control-addr", addresses[0], "--data-addr", addresses[1]],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SHERATAN_LOG": "warn", **(env or {})},
    )
    control = data = None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("control plane: "):
            control = line.split()[2]
        elif line.startswith("data plane: "):
            data = line.split()[2]
        elif line.startswith("ready:"):
            break
    assert control and data, "the hub did not report its addresses"
    with open(os.path.join(home, "hub_token")) as f:
        token = f.read().strip()
    return Hub(control, data, token, process, home)


@pytest.fixture
def hub():
    h = start_hub()
    yield h
    h.process.terminate()
    h.process.wait(timeout=30)


@pytest.fixture
def worker(hub):
    process = subprocess.Popen(
        [binary(), "worker", "--node-id", "py-test-worker", "--control-url", hub.control_url, "--data-url", hub.data_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SHERATAN_HUB_TOKEN": hub.token, "SHERATAN_LOG": "warn"},
    )
    yield process
    process.terminate()
    process.wait(timeout=30)


def cli(hub: Hub, *args: str) -> str:
    """`sheratan ARGS` against `hub`; its standard output (a failure fails the test)."""
    out = subprocess.run(
        [binary(), *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "SHERATAN_CONTROL_URL": hub.control_url,
            "SHERATAN_DATA_URL": hub.data_url,
            "SHERATAN_HUB_TOKEN": hub.token,
            "SHERATAN_HOME": hub.home,
            "SHERATAN_LOG": "warn",
        },
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def rust_worker(hub: Hub, node_id: str, queues: str = "default") -> subprocess.Popen:
    return subprocess.Popen(
        [binary(), "worker", "--node-id", node_id, "--queues", queues, "--control-url", hub.control_url, "--data-url", hub.data_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SHERATAN_HUB_TOKEN": hub.token, "SHERATAN_LOG": "warn"},
    )
