//! The model's checks: ids, statuses, counts, and a spec's validation.
use super::*;

#[test]
fn counts_serialise_every_status() {
    let mut c = Counts::default();
    c.add(TaskStatus::Done);
    let v = serde_json::to_value(c).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 7);
    assert_eq!(v["done"], 1);
    assert_eq!(v["waiting"], 0);
    let back: Counts = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);
}

#[test]
fn spec_refuses_unknown_fields_and_bad_values() {
    let err = serde_json::from_str::<JobSpec>(r#"{"command":["x"],"framez":"1"}"#).unwrap_err();
    assert!(err.to_string().contains("framez"));
    let mut spec = JobSpec {
        command: vec!["true".into()],
        ..Default::default()
    };
    assert!(spec.validate().is_ok());
    spec.priority = 1001;
    assert_eq!(spec.validate(), Err(SpecError::Priority(1001)));
    spec.priority = 1;
    spec.frames = "x".into();
    assert!(matches!(spec.validate(), Err(SpecError::Frames(_))));
    spec.frames = "1".into();
    spec.pool = "a b".into();
    assert!(matches!(spec.validate(), Err(SpecError::BadName { .. })));
}

#[test]
fn statuses_round_trip_as_strings() {
    for s in TaskStatus::ALL {
        assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
        assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
    }
    assert!("nope".parse::<JobStatus>().is_err());
}
