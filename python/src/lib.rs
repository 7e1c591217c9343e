//! `drqueue._native`: the compiled half of the `drqueue` Python module.
//!
//! Every call to the master goes through the Rust client library the CLI
//! uses (no second HTTP client in Python), with the GIL released while it
//! waits on the network. Job files are parsed and checked by the same code
//! as `drqueue submit --file`, and `run_local` is the CLI's `run-local`.
//! Values cross as JSON text; the Python half (`drqueue/__init__.py`) turns
//! them into `Job` objects and friendly signatures.

use drqueue_client::{Client, ClientError};
use drqueue_common::graph::{self, Graph};
use drqueue_common::model::{JobId, JobSpec, JobStatus, TaskStatus};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use std::time::{Duration, Instant};

create_exception!(
    _native,
    DrQueueError,
    PyException,
    "Base class of every DrQueue error."
);
create_exception!(
    _native,
    ConnectionFailed,
    DrQueueError,
    "The master could not be reached at the client's URL."
);
create_exception!(
    _native,
    Unauthorized,
    DrQueueError,
    "The master wants an API token: set DRQUEUE_TOKEN or pass token=."
);
create_exception!(
    _native,
    NotFound,
    DrQueueError,
    "No such job, task or engine."
);
create_exception!(
    _native,
    InvalidRequest,
    DrQueueError,
    "The master (or the local check) refused the request as invalid."
);
create_exception!(
    _native,
    WaitTimeout,
    DrQueueError,
    "A wait ran out of time before the job ended."
);

fn to_py(e: ClientError) -> PyErr {
    let msg = e.to_string();
    match e {
        ClientError::Connect { .. } => ConnectionFailed::new_err(msg),
        ClientError::Unauthorized(m) => Unauthorized::new_err(format!(
            "{m}: the master wants an API token; set DRQUEUE_TOKEN or pass Client(token=...)"
        )),
        ClientError::NotFound(_) => NotFound::new_err(msg),
        ClientError::BadRequest(_) => InvalidRequest::new_err(msg),
        ClientError::Timeout(_) => WaitTimeout::new_err(msg),
        ClientError::Server { .. } | ClientError::Protocol(_) | ClientError::Config(_) => {
            DrQueueError::new_err(msg)
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| DrQueueError::new_err(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> PyResult<T> {
    serde_json::from_str(text).map_err(|e| InvalidRequest::new_err(format!("bad {what}: {e}")))
}

/// A connection to a master. Methods answer JSON text.
#[pyclass(module = "drqueue._native", frozen)]
struct NativeClient {
    inner: Client,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (url=None, token=None, ca_file=None))]
    fn new(url: Option<String>, token: Option<String>, ca_file: Option<String>) -> Self {
        NativeClient {
            inner: Client::with_ca_file(url.as_deref(), token.as_deref(), ca_file.as_deref()),
        }
    }

    #[getter]
    fn url(&self) -> String {
        self.inner.url().to_string()
    }

    fn submit(&self, py: Python<'_>, spec: &str) -> PyResult<String> {
        let spec: JobSpec = from_json("job", spec)?;
        let view = py.detach(|| self.inner.submit(&spec)).map_err(to_py)?;
        json(&view)
    }

    fn submit_graph(&self, py: Python<'_>, graph: &str) -> PyResult<String> {
        let graph: Graph = from_json("graph", graph)?;
        let views = py
            .detach(|| self.inner.submit_graph(&graph))
            .map_err(to_py)?;
        json(&views)
    }

    /// Uploads a folder (what the master lacks); returns the upload's
    /// report as JSON, whose `manifest` is the job's `inputs`.
    #[pyo3(signature = (dir, exclude=Vec::new()))]
    fn upload_dir(&self, py: Python<'_>, dir: &str, exclude: Vec<String>) -> PyResult<String> {
        let dir = std::path::PathBuf::from(dir);
        let report = py
            .detach(|| {
                self.inner
                    .upload_dir(&dir, &exclude, &drqueue_client::cas::Quiet)
            })
            .map_err(to_py)?;
        json(&report)
    }

    /// Fetches a job's collected outputs into `to`; returns the count as JSON.
    fn download(&self, py: Python<'_>, id: u64, to: &str) -> PyResult<String> {
        let to = std::path::PathBuf::from(to);
        let got = py
            .detach(|| {
                self.inner
                    .download_outputs(JobId(id), &to, &drqueue_client::cas::Quiet)
            })
            .map_err(to_py)?;
        json(&got)
    }

    fn job(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        let id = JobId(id);
        json(&py.detach(|| self.inner.job(id)).map_err(to_py)?)
    }

    #[pyo3(signature = (status=None))]
    fn jobs(&self, py: Python<'_>, status: Option<&str>) -> PyResult<String> {
        let status = status
            .map(|s| s.parse::<JobStatus>())
            .transpose()
            .map_err(InvalidRequest::new_err)?;
        json(&py.detach(|| self.inner.jobs(status)).map_err(to_py)?)
    }

    #[pyo3(signature = (id, status=None))]
    fn tasks(&self, py: Python<'_>, id: u64, status: Option<&str>) -> PyResult<String> {
        let id = JobId(id);
        let status = status
            .map(|s| s.parse::<TaskStatus>())
            .transpose()
            .map_err(InvalidRequest::new_err)?;
        json(&py.detach(|| self.inner.tasks(id, status)).map_err(to_py)?)
    }

    /// Every attempt of a task, as JSON (with the files each wrote).
    fn attempts(&self, py: Python<'_>, id: u64, task: u32) -> PyResult<String> {
        let id = JobId(id);
        json(&py.detach(|| self.inner.attempts(id, task)).map_err(to_py)?)
    }

    /// A frame's thumbnail (PNG bytes), or the job's newest.
    #[pyo3(signature = (id, frame=None))]
    fn thumbnail(&self, py: Python<'_>, id: u64, frame: Option<i64>) -> PyResult<Vec<u8>> {
        let id = JobId(id);
        py.detach(|| self.inner.thumbnail(id, frame)).map_err(to_py)
    }

    /// A task attempt's whole log (the latest attempt by default).
    #[pyo3(signature = (id, task, attempt=None))]
    fn log(&self, py: Python<'_>, id: u64, task: u32, attempt: Option<u32>) -> PyResult<Vec<u8>> {
        let id = JobId(id);
        py.detach(|| self.inner.log_all(id, task, attempt))
            .map_err(to_py)
    }

    /// pause, resume, cancel or retry; cancel and retry take a task set
    /// (`3,7-12`) to act on those tasks only.
    #[pyo3(signature = (id, action, tasks=None))]
    fn control(
        &self,
        py: Python<'_>,
        id: u64,
        action: &str,
        tasks: Option<&str>,
    ) -> PyResult<String> {
        let id = JobId(id);
        let view = py.detach(|| match tasks {
            Some(t) => self.inner.control_tasks(id, action, t),
            None => self.inner.control(id, action),
        });
        json(&view.map_err(to_py)?)
    }

    fn set_priority(&self, py: Python<'_>, id: u64, priority: u32) -> PyResult<String> {
        let id = JobId(id);
        json(
            &py.detach(|| self.inner.set_priority(id, priority))
                .map_err(to_py)?,
        )
    }

    /// Polls until the job ends; Ctrl-C interrupts it. Answers the job.
    #[pyo3(signature = (id, timeout=None))]
    fn wait(&self, py: Python<'_>, id: u64, timeout: Option<f64>) -> PyResult<String> {
        let id = JobId(id);
        let start = Instant::now();
        let limit = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        loop {
            let view = py.detach(|| self.inner.job(id)).map_err(to_py)?;
            if view.status.is_terminal() {
                return json(&view);
            }
            if let Some(l) = limit.filter(|l| start.elapsed() >= *l) {
                return Err(WaitTimeout::new_err(format!(
                    "job {id} is still {} after {:.1} s",
                    view.status,
                    l.as_secs_f64()
                )));
            }
            py.check_signals()?;
            py.detach(|| std::thread::sleep(Duration::from_millis(200)));
        }
    }

    fn engines(&self, py: Python<'_>) -> PyResult<String> {
        json(&py.detach(|| self.inner.engines()).map_err(to_py)?)
    }

    fn pools(&self, py: Python<'_>) -> PyResult<String> {
        json(&py.detach(|| self.inner.pools()).map_err(to_py)?)
    }
}

/// Parses and checks a job file's text (`file` names it in errors; a
/// `.json` name means JSON, else TOML) the way `drqueue submit --file`
/// does, and answers the graph as JSON.
#[pyfunction]
fn parse_graph(file: &str, text: &str, owner: &str) -> PyResult<String> {
    let g = graph::parse(file, text, owner, drqueue_common::now_millis())
        .map_err(|e| InvalidRequest::new_err(e.to_string()))?;
    json(&g)
}

/// Runs a graph here, without a master (as `drqueue run-local`), with the
/// GIL released. Answers each job's end as JSON.
#[pyfunction]
#[pyo3(signature = (graph, slots=1, log_dir="drqueue-local"))]
fn run_local(py: Python<'_>, graph: &str, slots: u32, log_dir: &str) -> PyResult<String> {
    use drqueue_client::local::{self, AttemptEnd, JobProgress, Observer};
    struct Quiet;
    impl Observer for Quiet {
        fn progress(&mut self, _: &[JobProgress]) {}
        fn attempt_ended(&mut self, e: &AttemptEnd) {
            if !e.outcome.is_success() {
                eprintln!(
                    "drqueue: job {} {} task {} attempt {}: {}; log: {}",
                    e.job,
                    e.name,
                    e.task,
                    e.attempt,
                    e.outcome.describe(),
                    e.log.display()
                );
            }
        }
    }
    let graph: Graph = from_json("graph", graph)?;
    let dir = std::path::PathBuf::from(log_dir);
    let ends = py
        .detach(|| local::run(&graph, slots, &dir, &mut Quiet))
        .map_err(|e| DrQueueError::new_err(format!("{e:#}")))?;
    let out: Vec<serde_json::Value> = ends
        .iter()
        .map(|j| {
            serde_json::json!({
                "id": j.id, "name": j.name, "status": j.status,
                "counts": j.counts, "tasks_total": j.tasks,
            })
        })
        .collect();
    json(&out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeClient>()?;
    m.add_function(wrap_pyfunction!(parse_graph, m)?)?;
    m.add_function(wrap_pyfunction!(run_local, m)?)?;
    m.add("DrQueueError", py.get_type::<DrQueueError>())?;
    m.add("ConnectionFailed", py.get_type::<ConnectionFailed>())?;
    m.add("Unauthorized", py.get_type::<Unauthorized>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    m.add("WaitTimeout", py.get_type::<WaitTimeout>())?;
    Ok(())
}
