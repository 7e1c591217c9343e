//! The API's OpenAPI document against the live master: every documented
//! operation is served and nothing else is, and what the master sends and
//! takes fits the schemas the document gives for it.

use drqueue_common::model::JobStatus;
use drqueue_tests::openapi_check::check;
use drqueue_tests::{farm_with_admin, Farm};
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Calls `method` on `path` of the farm; status and body.
fn call(farm: &Farm, method: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{}{path}", farm.http);
    let req = ureq::http::Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(&url)
        .header("Content-Type", "application/json")
        .body(if method == "get" {
            Vec::new()
        } else {
            b"{}".to_vec()
        })
        .unwrap();
    let resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    // The feed streams for ever: its head is enough.
    if path.starts_with("/api/events") {
        return (status, String::new());
    }
    let body = resp.into_body().read_to_string().unwrap_or_default();
    (status, body)
}

#[test]
fn the_openapi_document_matches_the_live_routes() {
    let farm = Farm::start();
    let doc: serde_json::Value = ureq::get(format!("{}/api/openapi.json", farm.http))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{index}", "0")
            .replace("{frame}", "1")
            .replace("{name}", "x")
            .replace(
                "{action}",
                if path.starts_with("/api/jobs") {
                    "pause"
                } else {
                    "enable"
                },
            );
        let documented: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for method in ["get", "post", "put", "patch", "delete"] {
            // Signing out clears cookies only; sign-in and the rest answer
            // with their own errors for this empty farm, never "no route".
            let (status, body) = call(&farm, method, &concrete);
            if documented.contains(&method) {
                operations += 1;
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                assert!(
                    !body.contains("no such API path"),
                    "{method} {path} is documented but not routed: {body}"
                );
                let op = &item[method];
                assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()));
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }
    assert!(operations >= 35, "{operations} operations");
    // A path nobody documented is no route at all.
    let (status, body) = call(&farm, "get", "/api/nothing-here");
    assert_eq!(status, 404);
    assert!(body.contains("no such API path"));
}

fn document(farm: &Farm, token: &str) -> Value {
    ureq::get(format!("{}/api/openapi.json", farm.http))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("the document")
        .body_mut()
        .read_json()
        .expect("JSON")
}

/// Sends `body` (checked first against the documented request body) to
/// `path` as `method`, and checks the answer against the schema documented
/// for its status; returns the status and the answer.
fn exchange(
    farm: &Farm,
    doc: &Value,
    token: &str,
    (method, template, path): (&str, &str, &str),
    body: Option<Value>,
) -> (u16, Value) {
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not documented");
    if let Some(body) = &body {
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        check(doc, schema, body, "body").unwrap_or_else(|e| panic!("{method} {template}: {e}"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(format!("{}{path}", farm.http))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.map(|b| b.to_string()).unwrap_or_default().into_bytes())
        .unwrap();
    let mut resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let answer: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    let documented = &op["responses"][status.to_string()];
    let documented = if documented.is_null() {
        &op["responses"][format!("{}XX", status / 100)]
    } else {
        documented
    };
    let schema = &documented["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} answered {status}, which the document does not give: {answer}"
    );
    check(doc, schema, &answer, "$").unwrap_or_else(|e| panic!("{method} {path} ({status}): {e}"));
    (status, answer)
}

#[test]
fn what_the_master_sends_and_takes_fits_the_documented_schemas() {
    let (mut farm, admin) = farm_with_admin(&[]);
    farm.engine("e", &[]);
    farm.wait_engines(1);
    let doc = document(&farm, &admin);
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "JobSpec",
        "JobView",
        "TaskView",
        "EngineView",
        "JobSummary",
        "AttemptRecord",
    ] {
        assert!(schemas.contains_key(name), "no schema for {name}");
    }
    let fields = schemas["JobView"]["properties"]
        .as_object()
        .map_or(0, |p| p.len());
    assert!(fields >= 30, "JobView documents {fields} fields");
    let ask = |method, template, path: &str, body| {
        exchange(&farm, &doc, &admin, (method, template, path), body)
    };

    let spec = json!({"name": "first", "command": ["true"], "frames": "1-3"});
    let (status, first) = ask("post", "/api/jobs", "/api/jobs", Some(spec));
    assert_eq!(status, 201);
    let id = first["id"].as_u64().expect("an id");
    assert_eq!(
        farm.wait_job(drqueue_common::model::JobId(id), LONG).status,
        JobStatus::Done
    );
    let after =
        json!({"name": "second", "command": ["true"], "after": [{"job": id}], "paused": true});
    let (_, second) = ask("post", "/api/jobs", "/api/jobs", Some(after));
    let second = second["id"].as_u64().expect("an id");

    let job = |rest: &str| format!("/api/jobs/{id}{rest}");
    let (_, view) = ask("get", "/api/jobs/{id}", &job(""), None);
    assert_eq!(view["dependents"], json!([second]));
    ask("get", "/api/jobs", "/api/jobs", None);
    ask("get", "/api/jobs/{id}/tasks", &job("/tasks"), None);
    ask(
        "get",
        "/api/jobs/{id}/tasks/{index}/attempts",
        &job("/tasks/0/attempts"),
        None,
    );
    ask(
        "get",
        "/api/jobs/{id}/thumbnails",
        &job("/thumbnails"),
        None,
    );
    ask(
        "patch",
        "/api/jobs/{id}",
        &format!("/api/jobs/{second}"),
        Some(json!({"priority": 7})),
    );
    ask(
        "post",
        "/api/jobs/{id}/{action}",
        &format!("/api/jobs/{second}/resume"),
        Some(json!({})),
    );
    let (status, _) = ask("get", "/api/jobs/{id}", "/api/jobs/999", None);
    assert_eq!(status, 404);

    let (_, engines) = ask("get", "/api/engines", "/api/engines", None);
    let engine = engines[0]["id"].as_str().expect("an engine id").to_string();
    ask(
        "get",
        "/api/engines/{id}",
        &format!("/api/engines/{engine}"),
        None,
    );
    ask(
        "post",
        "/api/engines/{id}/{action}",
        &format!("/api/engines/{engine}/drain"),
        None,
    );
    ask(
        "post",
        "/api/engines/{id}/{action}",
        &format!("/api/engines/{engine}/enable"),
        None,
    );
    ask(
        "post",
        "/api/join-tokens",
        "/api/join-tokens",
        Some(json!({"uses": 1})),
    );
    ask("get", "/api/pools", "/api/pools", None);
    ask(
        "put",
        "/api/limits/{name}",
        "/api/limits/gpu",
        Some(json!({"count": 2})),
    );
    ask("get", "/api/limits/{name}", "/api/limits/gpu", None);
    ask("get", "/api/limits", "/api/limits", None);

    let (status, _) = ask(
        "post",
        "/api/users",
        "/api/users",
        Some(json!({"name": "bob", "role": "artist"})),
    );
    assert_eq!(status, 201);
    ask(
        "post",
        "/api/users/{name}/tokens",
        "/api/users/bob/tokens",
        None,
    );
    ask("get", "/api/users", "/api/users", None);
    ask("get", "/api/audit", "/api/audit", None);
    ask("get", "/api/whoami", "/api/whoami", None);
    ask("get", "/api/usage", "/api/usage", None);
    // A change without its body is refused, in the documented error shape.
    let (status, err) = ask("patch", "/api/jobs/{id}", &job(""), None);
    assert_eq!(status, 400, "{err}");
}
