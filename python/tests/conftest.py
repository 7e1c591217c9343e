"""A real farm for the Python tests: drqueue-master and one drqueue-engine
started from the built binaries (DRQUEUE_BIN_DIR, default ../target/debug),
on free ports in a temporary directory. Engines get a bare `python3` (a venv
with nothing installed: no drqueue module, no cloudpickle), as a render node
has: callables must bring what they need."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import drqueue

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _bin(name: str) -> str:
    base = os.environ.get("DRQUEUE_BIN_DIR") or str(ROOT / "target" / "debug")
    path = pathlib.Path(base) / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build --workspace --bins` "
                    "(scripts/test does) or set DRQUEUE_BIN_DIR")
    return str(path)


BASE_TOOLS = ["sh", "bash", "true", "false", "sleep", "echo", "printf", "cat", "test",
              "env", "mkdir", "rm", "ls", "touch", "head", "tail", "wc", "seq", "sed", "grep"]


def bare_python(tmp: pathlib.Path) -> str:
    """A directory holding `python3` from a venv with nothing installed."""
    venv = tmp / "bare-python"
    if not (venv / "bin" / "python3").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin")


def _base_tools(tmp: pathlib.Path) -> str:
    """A directory of links to BASE_TOOLS, for engines' PATH."""
    tools = tmp / "base-tools"
    tools.mkdir(exist_ok=True)
    for tool in BASE_TOOLS:
        for d in ("/usr/bin", "/bin"):
            target = pathlib.Path(d) / tool
            if target.is_file() and not (tools / tool).exists():
                (tools / tool).symlink_to(target)
                break
    return str(tools)


class Farm:
    def __init__(self, tmp: pathlib.Path, master_args: list[str] | None = None):
        self.dir = tmp
        ready = tmp / "ready.json"
        self.master_log = open(tmp / "master.log", "w")
        self.master = subprocess.Popen(
            [_bin("drqueue-master"), "--db", str(tmp / "db"), "--http", "127.0.0.1:0",
             "--engines", "tcp://127.0.0.1:0", "--ready-file", str(ready),
             "--no-advertise", *(master_args or [])],
            stdout=subprocess.DEVNULL, stderr=self.master_log, cwd=tmp,
        )
        deadline = time.time() + 30
        while not ready.exists():
            if time.time() > deadline or self.master.poll() is not None:
                raise RuntimeError("the master did not start: " + (tmp / "master.log").read_text())
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.url, self.engines_endpoint = info["http"], info["engines"]
        self.engines: list[subprocess.Popen] = []
        self.client = drqueue.Client(self.url)

    def engine(self, name: str, *args: str, extra_path: str | None = None) -> None:
        env = dict(os.environ)
        # A bare python3, then core tools only: what the host has installed
        # (renderers, Python packages) never reaches the engine, unless a
        # test puts it in `extra_path`.
        env["PATH"] = bare_python(self.dir) + os.pathsep + _base_tools(self.dir)
        if extra_path:
            env["PATH"] = extra_path + os.pathsep + env["PATH"]
        env.pop("DRQUEUE_POOL", None)
        log = open(self.dir / f"engine-{name}.log", "w")
        self.engines.append(subprocess.Popen(
            [_bin("drqueue-engine"), "--master", self.engines_endpoint, "--name", name,
             "--state-dir", str(self.dir / f"engine-{name}"), *args],
            stdout=subprocess.DEVNULL, stderr=log, cwd=self.dir, env=env,
        ))
        deadline = time.time() + 30
        while not any(e["name"] == name and e["state"] != "offline"
                      for e in self.client.engines()):
            if time.time() > deadline:
                raise RuntimeError(f"engine {name} did not register")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in [*self.engines, self.master]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*self.engines, self.master]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.master_log.close()


@pytest.fixture
def farm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = Farm(tmp_path)
    f.engine("py1", "--slots", "2")
    yield f
    f.stop()
