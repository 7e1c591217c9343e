"""DrQueue from Python: submit and watch jobs, build job graphs, run functions
on the farm.

Every call to the master goes through the same Rust client library as the
``drqueue`` CLI (the compiled ``drqueue._native``), with the GIL released
while it waits on the network. Job options have the CLI flags' meaning.

    >>> import drqueue
    >>> farm = drqueue.Client()                      # found (DRQUEUE_URL, …, mDNS); DRQUEUE_TOKEN
    >>> job = farm.submit(["blender", "-b", "shot.blend", "-s", "{start}",
    ...                    "-e", "{end}", "-a"], frames="1-100", blocksize=10)
    >>> job.wait()                                   # raises JobFailed if it failed
"""

from __future__ import annotations

import base64
import json
import os
import pickle
from typing import Any, Callable, Iterable, Mapping, Sequence

from ._native import (
    ConnectionFailed,
    DrQueueError,
    InvalidRequest,
    NativeClient,
    NotFound,
    Unauthorized,
    WaitTimeout,
)
from ._native import parse_graph as _parse_graph
from ._native import run_local as _run_local

__all__ = [
    "Client",
    "Job",
    "Graph",
    "GraphJob",
    "DrQueueError",
    "ConnectionFailed",
    "Unauthorized",
    "NotFound",
    "InvalidRequest",
    "WaitTimeout",
    "JobFailed",
    "RemoteError",
]

RESULT_MARK = "DRQUEUE-RESULT:"
ERROR_MARK = "DRQUEUE-ERROR:"


class JobFailed(DrQueueError):
    """``Job.wait()`` on a job that ended failed or cancelled."""

    def __init__(self, job: "Job"):
        self.job = job
        c = job.counts
        super().__init__(
            f"job {job.id} ({job.name}) ended {job.status}: {c.get('done', 0)} done, "
            f"{c.get('failed', 0)} failed, {c.get('cancelled', 0)} cancelled; "
            f"read a failed task's log with job.log(TASK) or `drqueue log {job.id} TASK`"
        )


class RemoteError(DrQueueError):
    """A function run with ``submit_callable`` raised on the engine. The
    remote traceback is in ``remote_traceback`` (and in the message)."""

    def __init__(self, type_name: str, message: str, remote_traceback: str):
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(
            f"{type_name}: {message}\n\nRemote traceback (on the engine):\n{remote_traceback}"
        )


# Keyword arguments as the job-file keys (the CLI flags' long names).
_OPTION_KEYS = {
    "requires": "require",
    "limits": "limit",
}
_OPTIONS = {
    "name", "frames", "blocksize", "priority", "pool", "os", "min_cores",
    "min_ram_mb", "requires", "env", "cwd", "max_attempts", "timeout",
    "max_engines", "limits", "start_after", "notify", "notify_on", "paused",
    "preset", "scene", "output", "render_node", "target_task_minutes", "collect",
}


def _job_entry(command: Sequence[str] | None, options: Mapping[str, Any]) -> dict:
    """A job as a job-file entry (what ``drqueue submit --file`` reads)."""
    unknown = set(options) - _OPTIONS - {"after"}
    if unknown:
        raise InvalidRequest(
            f"unknown job option(s) {sorted(unknown)}; known: {sorted(_OPTIONS | {'after'})}"
        )
    entry: dict[str, Any] = {}
    if command is not None:
        if isinstance(command, str):
            raise InvalidRequest(
                "command must be a list of arguments, e.g. ['blender', '-b', 'shot.blend'] "
                "(it never goes through a shell)"
            )
        entry["command"] = [str(a) for a in command]
    for key, value in options.items():
        if value is None or key == "after":
            continue
        if key == "frames" and isinstance(value, int):
            value = str(value)
        entry[_OPTION_KEYS.get(key, key)] = value
    return entry


def _after_entries(after: Iterable[Any] | None) -> list:
    out: list = []
    for a in after or []:
        if isinstance(a, Job):
            out.append(a.id)
        elif isinstance(a, GraphJob):
            out.append(a.name)
        elif isinstance(a, (int, str)):
            out.append(a)
        else:
            raise InvalidRequest(f"after takes jobs, job ids or graph jobs, not {a!r}")
    return out


def _owner() -> str:
    # Empty: the master makes the job the caller's, the user of the token
    # (or "local" on a farm without users), so one person is one owner.
    return ""


class Client:
    """A connection to a master: without ``url`` the master is found as the
    CLI finds it (``DRQUEUE_URL``, the config file, a master on
    127.0.0.1:5580, DNS SRV with ``DRQUEUE_DOMAIN``, then mDNS), on the first
    call; ``token`` defaults to ``DRQUEUE_TOKEN``. An ``https://``
    master's certificate is verified, against the CA certificates in
    ``ca_file`` (PEM; default ``DRQUEUE_CA_FILE``) or the public roots."""

    def __init__(
        self, url: str | None = None, token: str | None = None, ca_file: str | None = None
    ):
        self._native = NativeClient(url, token, ca_file)

    @property
    def url(self) -> str:
        return self._native.url

    def __repr__(self) -> str:
        return f"drqueue.Client({self.url!r})"

    def submit(
        self,
        command: Sequence[str] | None = None,
        frames: str | int = "1",
        blocksize: int | str = 1,
        *,
        after: Iterable[Any] | None = None,
        **options: Any,
    ) -> "Job":
        """Submits a job. Options are the CLI flags: name, priority, pool, os,
        min_cores, min_ram_mb, requires, env, cwd, max_attempts, timeout,
        max_engines, limits, start_after, notify, notify_on, paused, and
        preset/scene/output/render_node. ``after`` takes jobs or ids.
        ``blocksize="auto"`` cuts each engine's task to its speed, about
        ``target_task_minutes`` (default 10) long.

        ``upload="scene_dir"`` sends that folder (only what the master
        lacks; ``upload_exclude`` globs leave files out) and runs each task
        in its own copy of it on the engine: no shared file system needed.
        ``collect=["out/*.png"]`` brings the matching files back, for
        :meth:`Job.download`. ``tiles="3x3", resolution="1920x1080"`` (with
        a povray or blender preset; ``tile_overlap``, ``keep_tiles``) splits
        each frame across the farm and stitches it."""
        upload = options.pop("upload", None)
        exclude = [str(g) for g in options.pop("upload_exclude", [])]
        entry = _job_entry(command, dict(options, frames=frames, blocksize=blocksize))
        if "cwd" not in entry and upload is None:
            entry["cwd"] = os.getcwd()
        entry["after"] = _after_entries(after)
        graph = json.loads(_parse_graph("submit.json", json.dumps(entry), _owner()))
        spec = graph["jobs"][0]["spec"]
        if upload is not None:
            report = json.loads(self._native.upload_dir(os.fspath(upload), exclude))
            spec["inputs"] = report["manifest"]
        return Job(self, json.loads(self._native.submit(json.dumps(spec))))

    def submit_callable(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **job_options: Any,
    ) -> "Job":
        """Runs ``fn(*args, **kwargs)`` on an engine that has ``python3``;
        nothing else needs installing there. ``job.result()`` gives its
        return value, or raises :class:`RemoteError` with the remote
        traceback. With cloudpickle installed here (``pip install
        "drqueue[callables]"``), functions from your own scripts, lambdas and
        closures travel by value; without it only importable functions do,
        and anything else is refused here, saying so."""
        command = _callable_command(fn, tuple(args), dict(kwargs or {}))
        requires = list(job_options.pop("requires", []))
        if "python3" not in requires:
            requires.append("python3")
        job_options.setdefault("name", getattr(fn, "__name__", "callable"))
        return self.submit(command, requires=requires, **job_options)

    def job(self, id: int) -> "Job":
        return Job(self, json.loads(self._native.job(int(id))))

    def jobs(self, status: str | None = None) -> list["Job"]:
        return [Job(self, v) for v in json.loads(self._native.jobs(status))]

    def engines(self) -> list[dict]:
        """Engines as ``drqueue engines --json`` shows them."""
        return json.loads(self._native.engines())

    def pools(self) -> list[dict]:
        return json.loads(self._native.pools())


# A command's strings may take 64 KiB together (the master's bound); leave
# room for the job's name and env.
_COMMAND_BUDGET = 60 * 1024


def _callable_command(fn: Callable[..., Any], args: tuple, kwargs: dict) -> list[str]:
    """The task's command: python3 runs the bootstrap (shipped as text, so
    the engine needs no drqueue module), with this Python's version, the
    cloudpickle it used (its source, when used) and the pickled call."""
    import sys
    import zlib
    from importlib import resources

    bootstrap = resources.files(__package__).joinpath("_bootstrap.py").read_text()
    pickled, cloudpickle = _pickle_call(fn, args, kwargs)
    if cloudpickle is None:
        cp_version, cp_source = "-", "-"
    else:
        cp_version = cloudpickle.__version__
        with open(cloudpickle.cloudpickle.__file__, "rb") as f:
            cp_source = base64.b64encode(zlib.compress(f.read(), 9)).decode()
    payload = base64.b64encode(zlib.compress(pickled, 9)).decode()
    python = "%d.%d" % sys.version_info[:2]
    command = ["python3", "-c", bootstrap, python, cp_version, cp_source, payload]
    room = _COMMAND_BUDGET - sum(len(a) for a in command[:-1])
    if len(payload) > room:
        raise InvalidRequest(
            f"the pickled function and arguments take {len(payload)} bytes; a callable job "
            f"has room for {room}: pass a path to the data instead of the data"
        )
    return command


def _pickle_call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[bytes, Any]:
    """Pickles a call; returns the bytes and the cloudpickle module used (or
    None). With cloudpickle, functions from the caller's own scripts travel
    by value (the engine cannot import them); functions from installed
    packages travel by reference, so the engine needs those packages."""
    try:
        import cloudpickle  # type: ignore[import-not-found]
    except ImportError:
        return _pickle_by_reference(fn, args, kwargs), None
    import sys
    import sysconfig

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    path = getattr(module, "__file__", None) or ""
    by_value = (
        module is not None
        and module.__name__ != "__main__"
        and not any(path.startswith(p) for p in installed)
    )
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps((fn, args, kwargs)), cloudpickle
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _pickle_by_reference(fn: Callable[..., Any], args: tuple, kwargs: dict) -> bytes:
    """Plain pickle sends a function as its module and name, so the engine
    must be able to import it: refuse here what it could not."""
    name = getattr(fn, "__qualname__", repr(fn))
    where = getattr(fn, "__module__", None)
    fix = (
        'install cloudpickle where you submit from (pip install "drqueue[callables]"), '
        "which sends functions by value, or move it into a module the engines can import"
    )
    if where == "__main__" or "<lambda>" in name or "<locals>" in name:
        place = "your script (__main__)" if where == "__main__" else f"{where} as {name}"
        raise InvalidRequest(
            f"{name} is defined in {place}; without cloudpickle a function travels by "
            f"name, and the engine cannot import it: {fix}"
        )
    try:
        return pickle.dumps((fn, args, kwargs))
    except Exception as e:  # noqa: BLE001 - what pickle refuses, said plainly
        raise InvalidRequest(f"cannot pickle the call to {name}: {e}; {fix}") from e


def _succeeded(outcome: dict) -> bool:
    """An attempt's outcome is a success: exit 0, no timeout, cancel or error."""
    return (outcome.get("exit_code") == 0 and not outcome.get("timed_out")
            and not outcome.get("cancelled") and not outcome.get("error"))


class Job:
    """A job on the farm, as of its last refresh."""

    def __init__(self, client: Client, view: dict):
        self._client = client
        self._view = view

    def _update(self, view: dict) -> "Job":
        self._view = view
        return self

    @property
    def id(self) -> int:
        return self._view["id"]

    @property
    def name(self) -> str:
        return self._view["name"]

    @property
    def status(self) -> str:
        return self._view["status"]

    @property
    def counts(self) -> dict[str, int]:
        return self._view["counts"]

    @property
    def progress(self) -> float | None:
        """Percent done (done tasks plus running tasks' reported fractions),
        or None before anything ran."""
        return self._view.get("progress")

    @property
    def eta(self) -> dict | None:
        """``{"low_s", "high_s", "method"}``: when it may end, or None."""
        return self._view.get("eta")

    @property
    def blocked(self) -> list[str]:
        """Why ready tasks are not running (empty when nothing blocks)."""
        return self._view["blocked"]

    @property
    def data(self) -> dict:
        """Everything ``drqueue show --json`` gives."""
        return self._view

    def __repr__(self) -> str:
        return f"<drqueue.Job {self.id} {self.name!r} {self.status}>"

    def refresh(self) -> "Job":
        return self._update(json.loads(self._client._native.job(self.id)))

    def wait(self, timeout: float | None = None) -> "Job":
        """Waits for the job to end (Ctrl-C interrupts). Raises
        :class:`JobFailed` if it ended failed or cancelled, and
        :class:`WaitTimeout` after ``timeout`` seconds."""
        self._update(json.loads(self._client._native.wait(self.id, timeout)))
        if self.status != "done":
            raise JobFailed(self)
        return self

    def _control(self, action: str, tasks: str | Iterable[int] | None = None) -> "Job":
        if tasks is not None and not isinstance(tasks, str):
            tasks = ",".join(str(int(t)) for t in tasks)
        return self._update(json.loads(self._client._native.control(self.id, action, tasks)))

    def cancel(self, tasks: str | Iterable[int] | None = None) -> "Job":
        """Cancels the job, or only ``tasks`` (``"3,7-12"`` or indices)."""
        return self._control("cancel", tasks)

    def set_priority(self, priority: int) -> "Job":
        """A new priority, 0-1000 (higher runs first)."""
        return self._update(json.loads(self._client._native.set_priority(self.id, int(priority))))

    def pause(self) -> "Job":
        return self._control("pause")

    def resume(self) -> "Job":
        return self._control("resume")

    def retry(self, tasks: str | Iterable[int] | None = None) -> "Job":
        """Puts failed and cancelled tasks (or only ``tasks``) back to ready."""
        return self._control("retry", tasks)

    def tasks(self, status: str | None = None) -> list[dict]:
        """Tasks as ``drqueue tasks --json`` shows them."""
        return json.loads(self._client._native.tasks(self.id, status))

    def attempts(self, task: int) -> list[dict]:
        """Every attempt of a task, as ``drqueue attempts --json`` shows them."""
        return json.loads(self._client._native.attempts(self.id, int(task)))

    def outputs(self, task: int | None = None) -> list[dict]:
        """The files the done tasks (or one task) wrote, as ``drqueue
        outputs --json`` lists them: ``{"task", "attempt", "path", "size"}``."""
        tasks = [task] if task is not None else [t["index"] for t in self.tasks("done")]
        rows = []
        for t in tasks:
            done = [a for a in self.attempts(t) if _succeeded(a["outcome"])]
            if done:
                a = done[-1]
                rows += [{"task": t, "attempt": a["attempt"]["attempt"], "path": o["path"],
                          "size": o["size"]} for o in a["outcome"].get("outputs", [])]
        return rows

    def download(self, to: "str | os.PathLike[str]" = ".") -> int:
        """Fetches the files the job's tasks collected (``collect=``) into
        ``to``, laid out by their paths, each checked against its hash;
        returns how many. Safe to call again after an interruption."""
        return int(json.loads(self._client._native.download(self.id, os.fspath(to)))["files"])

    def thumbnail(self, frame: int | None = None) -> bytes:
        """A frame's thumbnail as PNG bytes (the newest without ``frame``);
        :class:`NotFound` when there is none."""
        return bytes(self._client._native.thumbnail(self.id, frame))

    def log(self, task: int, attempt: int | None = None) -> str:
        """A task's log: the latest attempt, or ``attempt``."""
        return self._client._native.log(self.id, task, attempt).decode("utf-8", "replace")

    def result(self, timeout: float | None = None) -> Any:
        """The return value of a ``submit_callable`` job (waits for it);
        raises :class:`RemoteError` if the function raised."""
        try:
            self.wait(timeout)
        except JobFailed:
            pass
        log = self.log(0)
        for line in reversed(log.splitlines()):
            if line.startswith(RESULT_MARK) and self.status == "done":
                return pickle.loads(base64.b64decode(line[len(RESULT_MARK):]))
            if line.startswith(ERROR_MARK):
                type_name, message, tb = pickle.loads(base64.b64decode(line[len(ERROR_MARK):]))
                raise RemoteError(type_name, message, tb)
        if self.status != "done":
            raise JobFailed(self)
        raise DrQueueError(
            f"job {self.id} did not print a result: was it submitted with submit_callable?"
        )


class GraphJob:
    """A job in a :class:`Graph`; pass it in another job's ``after``."""

    def __init__(self, graph: "Graph", name: str, entry: dict):
        self.graph = graph
        self.name = name
        self.entry = entry

    def __repr__(self) -> str:
        return f"<drqueue.GraphJob {self.name!r}>"


class Graph:
    """Jobs that wait for each other, submitted all or nothing (in the spirit
    of OpenRenderManagement/Puli). Keyword arguments are defaults for every
    job (e.g. ``pool``, ``priority``).

        g = drqueue.Graph("shot010", pool="gpu")
        sim = g.add_job(["hython", "sim.py"], name="sim")
        render = g.add_job(["blender", ...], frames="1-100", after=[sim])
        g.submit(client)  # or g.run_local(slots=2), or g.save("shot010.json")
    """

    def __init__(self, name: str, **defaults: Any):
        self.name = name
        self.defaults = defaults
        self.jobs: list[GraphJob] = []

    def add_job(
        self,
        command: Sequence[str] | None = None,
        frames: str | int = "1",
        blocksize: int | str = 1,
        *,
        name: str | None = None,
        after: Iterable[Any] | None = None,
        **options: Any,
    ) -> GraphJob:
        name = name or f"{self.name}-{len(self.jobs) + 1}"
        if any(j.name == name for j in self.jobs):
            raise InvalidRequest(f"graph {self.name!r} already has a job named {name!r}")
        merged = dict(self.defaults)
        merged.update(options)
        entry = _job_entry(command, dict(merged, frames=frames, blocksize=blocksize))
        entry["name"] = name
        entry["after"] = _after_entries(after)
        job = GraphJob(self, name, entry)
        self.jobs.append(job)
        return job

    def add_chain(self, jobs: Sequence[GraphJob]) -> None:
        """Makes each job wait for the one before it."""
        for before, job in zip(jobs, jobs[1:]):
            if before.name not in job.entry["after"]:
                job.entry["after"].append(before.name)

    def to_dict(self) -> dict:
        """The graph in the job-file format (``drqueue submit --file``)."""
        return {"jobs": [dict(j.entry) for j in self.jobs]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the graph as a JSON job file (give it a ``.json`` name)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    def _checked(self) -> str:
        """The graph checked as the CLI checks files, as the master's JSON."""
        for j in self.jobs:
            j.entry.setdefault("cwd", os.getcwd())
        return _parse_graph(f"{self.name}.json", self.to_json(), _owner())

    def submit(self, client: Client) -> dict[str, Job]:
        """Submits every job, all or nothing; answers jobs by name."""
        views = json.loads(client._native.submit_graph(self._checked()))
        return {v["name"]: Job(client, v) for v in views}

    def run_local(self, slots: int = 1, log_dir: str = "drqueue-local") -> dict[str, str]:
        """Runs the graph on this machine, no master; answers each job's end
        status by name (``done``, ``failed`` or ``cancelled``)."""
        ends = json.loads(_run_local(self._checked(), slots, log_dir))
        return {e["name"]: e["status"] for e in ends}
