"""`drqueue.Client()` with no address finds the master over mDNS, inside a
private network namespace (`unshare -n`, loopback with multicast): nothing
leaves it, and no master of the host's can answer instead."""

from __future__ import annotations

import os
import json
import shutil
import subprocess
import sys

import pytest

from conftest import _bin

INSIDE = r"""
import json, os, pathlib, subprocess, sys, time
import drqueue
tmp = pathlib.Path(sys.argv[1])
ready = tmp / "ready.json"
master = subprocess.Popen(
    [sys.argv[2], "--db", str(tmp / "db"), "--http", "127.0.0.1:0",
     "--engines", "tcp://127.0.0.1:0", "--ready-file", str(ready)],
    stdout=subprocess.DEVNULL, stderr=open(tmp / "master.log", "w"))
try:
    deadline = time.time() + 30
    while not ready.exists():
        assert time.time() < deadline and master.poll() is None, (tmp / "master.log").read_text()
        time.sleep(0.05)
    want = json.loads(ready.read_text())["http"]
    client = drqueue.Client()
    assert client.jobs() == [], "the found master answers"
    print(json.dumps({"url": client.url, "want": want}))
finally:
    master.terminate()
    master.wait()
"""


def test_client_with_no_address_finds_the_master_over_mdns(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip (iproute2) for a private network namespace")
    env = {k: v for k, v in os.environ.items() if k not in ("DRQUEUE_URL", "DRQUEUE_DOMAIN", "DRQUEUE_TOKEN")}
    env["DRQUEUE_CONFIG"] = str(tmp_path / "no-config.toml")
    setup = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
    script = tmp_path / "inside.py"
    script.write_text(INSIDE)
    out = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'{setup} && exec "$0" "$@"',
         sys.executable, str(script), str(tmp_path), _bin("drqueue-master")],
        env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["url"] == seen["want"], seen
