"""The drqueue module against a real master and engine."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
import socket

import pytest

import drqueue


def test_submit_and_wait(farm):
    job = farm.client.submit(["sh", "-c", "echo frame {frame}"], frames="1-4", blocksize=2,
                             name="hello", priority=600)
    assert isinstance(job, drqueue.Job)
    assert (job.name, job.counts["waiting"] + job.counts["ready"] + job.counts["assigned"]
            + job.counts["running"] + job.counts["done"]) == ("hello", 2)
    job.wait(timeout=60)
    assert job.status == "done" and job.counts["done"] == 2
    assert job.blocked == []
    tasks = job.tasks()
    assert [(t["first"], t["last"]) for t in tasks] == [(1, 2), (3, 4)]
    assert job.log(1) == "frame 3\nframe 4\n"
    assert farm.client.job(job.id).status == "done"
    assert [j.id for j in farm.client.jobs(status="done")] == [job.id]
    engines = farm.client.engines()
    assert engines[0]["name"] == "py1" and "python3" in engines[0]["capabilities"]
    assert {p["name"]: p["engines"] for p in farm.client.pools()} == {"default": 1}


def test_a_failed_job_raises_job_failed_and_can_be_retried(farm):
    job = farm.client.submit(["sh", "-c", "echo oops; exit 3"], max_attempts=1, name="bad")
    with pytest.raises(drqueue.JobFailed) as e:
        job.wait(timeout=60)
    assert "ended failed" in str(e.value) and e.value.job.id == job.id
    assert isinstance(e.value, drqueue.DrQueueError)
    assert job.log(0) == "oops\n"
    job.retry()
    with pytest.raises(drqueue.JobFailed):
        job.wait(timeout=60)
    assert job.tasks()[0]["attempts"] == 2


def test_pause_resume_cancel_and_after(farm):
    first = farm.client.submit(["sleep", "600"], name="long")
    second = farm.client.submit(["true"], after=[first])
    assert second.status == "waiting"
    assert second.blocked == [f"waiting for job {first.id}"]
    first.cancel()
    with pytest.raises(drqueue.JobFailed):
        first.wait(timeout=60)
    with pytest.raises(drqueue.JobFailed):
        second.wait(timeout=60)
    assert second.status == "cancelled"
    paused = farm.client.submit(["true"], paused=True)
    assert paused.status == "paused" and paused.blocked == ["paused"]
    paused.resume().wait(timeout=60)


def test_graphs_run_on_the_farm_and_locally(farm, tmp_path):
    g = drqueue.Graph("shot010", priority=700)
    sim = g.add_job(["sh", "-c", "echo sim >> order.txt"], name="sim")
    render = g.add_job(["sh", "-c", "echo render {start} >> order.txt"], frames="1-3",
                       name="render")
    comp = g.add_job(["sh", "-c", "echo comp >> order.txt"], name="comp")
    g.add_chain([sim, render, comp])
    data = g.to_dict()
    assert [j["after"] for j in data["jobs"]] == [[], ["sim"], ["render"]]
    # The same graph is a job file the CLI accepts.
    g.save(tmp_path / "shot010.json")
    assert json.loads((tmp_path / "shot010.json").read_text()) == data
    jobs = g.submit(farm.client)
    assert list(jobs) == ["sim", "render", "comp"]
    assert jobs["comp"].status == "waiting"
    jobs["comp"].wait(timeout=60)
    lines = (farm.dir / "order.txt").read_text().splitlines()
    assert lines[0] == "sim" and sorted(lines[1:4]) == ["render 1", "render 2", "render 3"]
    assert lines[4] == "comp"
    # Locally, no master.
    local = tmp_path / "local"
    local.mkdir()
    for j in g.jobs:
        j.entry["cwd"] = str(local)
    ends = g.run_local(slots=2, log_dir=str(local / "logs"))
    assert ends == {"sim": "done", "render": "done", "comp": "done"}
    assert (local / "order.txt").read_text().splitlines()[-1] == "comp"


def test_a_graph_is_all_or_nothing(farm):
    g = drqueue.Graph("broken")
    a = g.add_job(["true"], name="a")
    g.add_job(["true"], name="b", after=[a, 999])  # 999 is not on the farm
    with pytest.raises(drqueue.InvalidRequest, match="999"):
        g.submit(farm.client)
    assert farm.client.jobs() == []
    cyclic = drqueue.Graph("cyclic")
    x = cyclic.add_job(["true"], name="x")
    y = cyclic.add_job(["true"], name="y", after=[x])
    x.entry["after"].append("y")
    with pytest.raises(drqueue.InvalidRequest, match="cycle: x → y → x|cycle: y → x → y"):
        cyclic.submit(farm.client)
    assert y.name == "y"


def _square(n):
    return {"square": n * n}


def _explode(msg):
    raise ValueError(msg)


def test_callables_return_values_and_raise_remote_errors(farm):
    job = farm.client.submit_callable(_square, args=(12,))
    assert job.result(timeout=60) == {"square": 144}
    assert job.name == "_square"
    lam = farm.client.submit_callable(lambda a, b=1: a + b, args=(40,), kwargs={"b": 2})
    assert lam.result(timeout=60) == 42
    bad = farm.client.submit_callable(_explode, args=("no frames today",), max_attempts=1)
    with pytest.raises(drqueue.RemoteError) as e:
        bad.result(timeout=60)
    assert e.value.type_name == "ValueError"
    assert "no frames today" in str(e.value)
    assert "_explode" in e.value.remote_traceback and "Traceback" in e.value.remote_traceback


def test_errors_are_drqueue_errors_with_clear_messages(farm, tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    with pytest.raises(drqueue.ConnectionFailed, match=re.escape(url)):
        drqueue.Client(url).jobs()
    with pytest.raises(drqueue.NotFound, match="no job 4242"):
        farm.client.job(4242)
    with pytest.raises(drqueue.InvalidRequest, match="frames"):
        farm.client.submit(["true"], frames="1-x")
    with pytest.raises(drqueue.InvalidRequest, match="unknown job option"):
        farm.client.submit(["true"], colour="blue")
    with pytest.raises(drqueue.InvalidRequest, match="list of arguments"):
        farm.client.submit("echo hi")
    with pytest.raises(drqueue.WaitTimeout):
        farm.client.submit(["sleep", "5"]).wait(timeout=0.3)


def test_a_master_with_tokens_says_to_set_one(tmp_path, monkeypatch):
    from conftest import Farm

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tokens").write_text("s3cret\n")
    f = Farm(tmp_path, ["--token-file", str(tmp_path / "tokens")])
    try:
        with pytest.raises(drqueue.Unauthorized, match="DRQUEUE_TOKEN"):
            f.client.submit(["true"])
        job = drqueue.Client(f.url, token="s3cret").submit(["true"])
        assert job.id == 1
    finally:
        f.stop()


def _readme_example() -> str:
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block, "README has a ```python example"
    return block.group(1)


def _fresh_venv(tmp_path: pathlib.Path, *requirements: str) -> pathlib.Path:
    """A new venv with the wheel scripts/test built (and the cloudpickle wheel
    it fetched), installed offline as the README says: `pip install ...`."""
    wheels = os.environ.get("DRQUEUE_TEST_WHEELS")
    if not wheels:
        pytest.fail("DRQUEUE_TEST_WHEELS is not set: run the tests with scripts/test, "
                    "which builds the drqueue wheel into it")
    venv = tmp_path / "fresh-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index",
                    "--find-links", wheels, *requirements], check=True)
    return venv / "bin" / "python"


def test_the_readme_example_runs_in_a_fresh_venv(farm, tmp_path):
    """The README's Python example, run as written by a new user's venv
    against engines that have only a bare python3."""
    script = tmp_path / "example.py"
    script.write_text(_readme_example())
    env = dict(os.environ, DRQUEUE_URL=farm.url)
    python = _fresh_venv(tmp_path, "drqueue")
    # Without cloudpickle, a function from the script cannot travel: refused
    # at submit, naming the fix (the jobs above it in the example ran).
    plain = subprocess.run([str(python), str(script)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert "area is defined in your script (__main__)" in plain.stderr, plain.stderr
    assert "drqueue[callables]" in plain.stderr
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    os.environ["DRQUEUE_TEST_WHEELS"], "drqueue[callables]"], check=True)
    ok = subprocess.run([str(python), str(script)], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "2073600", ok.stdout


def test_a_by_value_function_on_another_python_says_what_it_needs(farm, tmp_path):
    """The bootstrap refuses bytecode from another Python version, saying so."""
    command = drqueue._callable_command(_square, (3,), {})
    assert command[:2] == ["python3", "-c"] and command[4] != "-", "cloudpickle was used"
    command[3] = "2.7"
    forged = farm.client.submit(command, max_attempts=1, name="forged")
    with pytest.raises(drqueue.RemoteError, match="from Python 2.7, and this engine runs Python"):
        forged.result(timeout=60)


def test_listings_follow_every_page(tmp_path, monkeypatch):
    from conftest import Farm

    monkeypatch.chdir(tmp_path)
    f = Farm(tmp_path)
    try:
        job = f.client.submit(["true"], frames="1-2500", paused=True)
        tasks = job.tasks()
        assert [t["index"] for t in tasks] == list(range(2500))
        assert job.tasks(status="failed") == []
    finally:
        f.stop()


def test_a_ca_file_that_holds_no_certificate_fails_closed(farm, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(drqueue.DrQueueError, match="holds no PEM certificate"):
        drqueue.Client(farm.url, ca_file=str(bad)).jobs()


def test_some_tasks_cancelled_and_retried_and_priority_changed(farm):
    job = farm.client.submit(["sleep", "30"], frames="1-6", paused=True, priority=400)
    job.cancel(tasks="1,3-4")
    assert job.counts["cancelled"] == 3
    job.retry(tasks=[3])
    assert job.counts["cancelled"] == 2
    assert job.set_priority(800).data["priority"] == 800
    with pytest.raises(drqueue.InvalidRequest, match="no task 9"):
        job.cancel(tasks="9")
    with pytest.raises(drqueue.InvalidRequest, match="priority 5000 is out of range"):
        job.set_priority(5000)
    job.cancel()


def test_outputs_and_thumbnails_of_a_rendered_job(farm, tmp_path):
    """The engine's built-in renderer writes real PNGs: the job lists them
    and serves their thumbnails."""
    from conftest import _bin

    (tmp_path / "frames").mkdir()
    job = farm.client.submit(
        [_bin("drqueue-engine"), "render-demo", "--frame", "{frame}", "--output",
         "frames/f_{padframe:2}.png", "--width", "48", "--height", "32", "--samples", "1"],
        frames="1-2", output="frames/f_##.png")
    job.wait(timeout=120)
    rows = sorted((r["task"], r["path"]) for r in job.outputs())
    assert rows == [(0, "frames/f_01.png"), (1, "frames/f_02.png")]
    assert all(r["size"] > 0 for r in job.outputs(task=1))
    # The job reads done from memory; its thumbnails land with the next commit.
    for _ in range(100):
        try:
            png = job.thumbnail(frame=2)
            break
        except drqueue.NotFound:
            time.sleep(0.05)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert job.thumbnail().startswith(b"\x89PNG")
    with pytest.raises(drqueue.NotFound, match="no thumbnail for frame 9"):
        job.thumbnail(frame=9)


def test_blocksize_auto_cuts_tasks_as_they_are_given_out(farm):
    job = farm.client.submit(["sh", "-c", "echo frames {start}-{end}"], frames="1-30",
                             blocksize="auto", target_task_minutes=2)
    assert job.data["target_task_minutes"] == 2
    assert job.data["tasks_total"] == 1, "one task per part of the frame set, to start"
    job.wait(timeout=60)
    tasks = job.tasks()
    frames = sorted(f for t in tasks for f in range(t["first"], t["last"] + 1))
    assert frames == list(range(1, 31))
    assert tasks[0]["last"] == tasks[0]["first"], "the first task measures the engine"
    assert len(tasks) < 30
    with pytest.raises(drqueue.InvalidRequest, match="auto"):
        farm.client.submit(["true"], blocksize="big")


def test_an_uploaded_folder_runs_on_the_engine_and_its_outputs_download(farm, tmp_path):
    scene = tmp_path / "shot"
    (scene / "lib").mkdir(parents=True)
    (scene / "lib" / "words.txt").write_text("uploaded words\n")
    (scene / "skip.tmp").write_text("left out")
    job = farm.client.submit(
        ["sh", "-c", "test ! -e skip.tmp && cat lib/words.txt > out/f{frame}.txt"],
        frames="1-3", upload=scene, upload_exclude=["*.tmp"], collect=["out/*.txt"], name="up")
    # The client's folder is not where the task runs.
    scene.rename(tmp_path / "moved")
    job.wait(timeout=60)
    assert job.status == "done"
    assert job.download(tmp_path / "got") == 3
    for f in (1, 2, 3):
        assert (tmp_path / "got" / "out" / f"f{f}.txt").read_text() == "uploaded words\n"
    # Downloading again finds everything in place.
    assert job.download(tmp_path / "got") == 3
