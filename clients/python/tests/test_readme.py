"""clients/python/README.md's quick start, run as written against a real hub: the worker file,
the command that starts it, and the client that submits to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def run_quick_start(hub, tmp_path, worker_file: str, command: str, client_code: str, env: dict[str, str]) -> str:
    """Writes `app.py`, starts the worker `command` in a shell, runs `client_code`; its output.
    `python` in the commands is this interpreter, the one the SDK is installed in."""
    (tmp_path / "app.py").write_text(worker_file)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SHERATAN_DATA_URL": hub.data_url,
        "SHERATAN_CONTROL_URL": hub.control_url,
        "SHERATAN_LOG": "warn",
        **env,
    }
    env = {k: v for k, v in env.items() if v is not None}
    worker = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env)
    try:
        client = subprocess.run(
            [sys.executable, "-c", client_code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert client.returncode == 0, client.stderr
        return client.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=40) == 0


def test_the_readme_quick_start_runs_as_written(hub, tmp_path):
    worker_file, client_code = blocks("python")[:2]
    assert worker_file.startswith("# app.py\n") and len(worker_file.strip().splitlines()) <= 14
    command = blocks("sh")[1].strip()
    assert command.startswith("python -m sheratan.worker app:handlers")
    out = run_quick_start(hub, tmp_path, worker_file, command, client_code, {"SHERATAN_HUB_TOKEN": hub.token})
    assert "pass 1 done\npass 2 done\npass 3 done\n" in out, out
    assert "{'width': 320}" in out, out


def test_the_projects_readme_python_quick_start_runs_as_written(hub, tmp_path):
    """The main README's "From Python": the worker file (its first line says how to start it)
    and the client, which finds the token in the local hub's home."""
    text = (README.parents[2] / "README.md").read_text()
    section = text[text.index("## From Python") :]
    worker_file, client_code = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    command = worker_file.splitlines()[0].split(": ", 1)[1]
    assert command == "python -m sheratan.worker app:handlers"
    out = run_quick_start(
        hub, tmp_path, worker_file, command, client_code, {"SHERATAN_HOME": hub.home, "SHERATAN_HUB_TOKEN": None}
    )
    assert out == "HELLO\n"
