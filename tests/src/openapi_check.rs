//! Checks a JSON value against a schema of an OpenAPI 3.0 document: the
//! subset schemars writes (`$ref`, `type` with `nullable`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `anyOf`,
//! `oneOf`, `allOf`, `minimum`). An object's field that its schema does not
//! name is an error too: the document must say every field the API sends.

use serde_json::Value;

/// Ok, or what first disagreed, with its JSON path.
pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{at}: the schema allows nothing")),
        Value::Object(map) => map,
        other => return Err(format!("{at}: not a schema: {other}")),
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: a $ref outside the components: {reference}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref to a missing schema {name}"));
        }
        return check(doc, target, value, at);
    }
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, value, at)?;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(any) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = any
                .iter()
                .filter_map(|s| check(doc, s, value, at).err())
                .collect();
            if errors.len() == any.len() {
                return Err(format!(
                    "{at}: no branch of {key} fits: {}",
                    errors.join("; ")
                ));
            }
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let Some(want) = schema.get("const") {
        if want != value {
            return Err(format!("{at}: {value} is not {want}"));
        }
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let fits = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => return Err(format!("{at}: unknown type {other}")),
        };
        if !fits {
            return Err(format!("{at}: {value} is not of type {kind}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            return Err(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let Some(items) = schema.get("items") {
        for (i, item) in value.as_array().into_iter().flatten().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return Err(format!("{at}: the required field {name} is missing"));
            }
        }
        for (name, field) in object {
            let here = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check(doc, s, field, &here)?,
                (None, Some(extra)) => check(doc, extra, field, &here)?,
                (None, None) if properties.is_some() => {
                    return Err(format!("{here}: sent but not in the schema"))
                }
                (None, None) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    #[test]
    fn the_checker_catches_each_kind_of_mismatch() {
        let doc = json!({"components": {"schemas": {
            "Job": {"type": "object", "required": ["id"], "properties": {
                "id": {"type": "integer", "minimum": 0},
                "eta": {"type": "object", "nullable": true, "properties": {"low_s": {"type": "integer"}}},
                "status": {"type": "string", "enum": ["done", "failed"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
        }}});
        let job = json!({"$ref": "#/components/schemas/Job"});
        let ok = json!({"id": 1, "eta": null, "status": "done", "tags": ["a"], "env": {"A": "b"}});
        assert_eq!(check(&doc, &job, &ok, "$"), Ok(()));
        for (bad, says) in [
            (json!({}), "required field id"),
            (json!({"id": -1}), "below the minimum"),
            (json!({"id": "1"}), "not of type integer"),
            (json!({"id": 1, "status": "gone"}), "not one of"),
            (json!({"id": 1, "tags": [1]}), "$.tags[0]"),
            (json!({"id": 1, "env": {"A": 2}}), "$.env.A"),
            (
                json!({"id": 1, "extra": true}),
                "sent but not in the schema",
            ),
            (json!({"id": 1, "eta": {"low_s": "x"}}), "$.eta.low_s"),
        ] {
            let err = check(&doc, &job, &bad, "$").expect_err(&bad.to_string());
            assert!(err.contains(says), "{bad}: {err}");
        }
        let missing = json!({"$ref": "#/components/schemas/Nope"});
        assert!(check(&doc, &missing, &ok, "$").is_err());
    }
}
