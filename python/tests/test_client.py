"""The drqueue module against a real master and engine."""

from __future__ import annotations

import json
import pathlib
import re
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


def test_the_readme_example_runs(farm, monkeypatch):
    """The README's Python example, run as written against this farm."""
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block, "README has a ```python example"
    monkeypatch.setenv("DRQUEUE_URL", farm.url)
    exec(compile(block.group(1), "README.md", "exec"), {})


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
