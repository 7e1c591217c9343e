//! Task counts by status: one number per status, in the order of
//! [`TaskStatus::ALL`], serialised as a map with every status present.

use super::TaskStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Task counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; 7]);

impl Counts {
    pub fn get(&self, s: TaskStatus) -> u64 {
        self.0[s.index()]
    }
    pub fn add(&mut self, s: TaskStatus) {
        self.0[s.index()] += 1;
    }
    pub fn remove(&mut self, s: TaskStatus) {
        self.0[s.index()] = self.0[s.index()].saturating_sub(1);
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn terminal(&self) -> u64 {
        self.get(TaskStatus::Done) + self.get(TaskStatus::Failed) + self.get(TaskStatus::Cancelled)
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(7))?;
        for st in TaskStatus::ALL {
            m.serialize_entry(st.as_str(), &self.get(*st))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(d)?;
        let mut c = Counts::default();
        for (k, v) in map {
            if let Ok(st) = k.parse::<TaskStatus>() {
                c.0[st.index()] = v;
            }
        }
        Ok(c)
    }
}

impl schemars::JsonSchema for Counts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Counts".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let count = serde_json::json!({"type": "integer", "minimum": 0});
        let properties: serde_json::Map<String, serde_json::Value> = TaskStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), count.clone()))
            .collect();
        let required: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({
            "description": "Tasks by status; every status is present.",
            "type": "object",
            "properties": properties,
            "required": required,
        })
    }
}
