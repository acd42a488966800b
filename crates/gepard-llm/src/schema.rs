//! JSON-schema clean-up before tools are offered to a provider.

use serde_json::Value;

/// Returns the schema with every `"type": "dict"` (BFCL's spelling) replaced by `"type": "object"`,
/// at any depth (properties, items, nested objects, `anyOf` lists, and `type` arrays such as
/// `["dict", "null"]`). Everything else is kept as is.
pub fn normalize_schema(schema: &Value) -> Value {
    let mut out = schema.clone();
    normalize_in_place(&mut out);
    out
}

fn normalize_in_place(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(ty) = map.get_mut("type") {
                match ty {
                    Value::String(s) if s == "dict" => *s = "object".to_owned(),
                    Value::Array(types) => {
                        for t in types.iter_mut() {
                            if t.as_str() == Some("dict") {
                                *t = Value::String("object".to_owned());
                            }
                        }
                    }
                    _ => {}
                }
            }
            for (key, child) in map.iter_mut() {
                // A property *named* "type" lives under "properties"; its value is a schema
                // object and is handled by the recursion like any other.
                if key != "type" || child.is_object() {
                    normalize_in_place(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_in_place),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dict_is_mapped_to_object_at_every_depth() {
        let schema = json!({
            "type": "dict",
            "properties": {
                "type": {"type": "string", "enum": ["dict"]},
                "inner": {"type": "dict", "properties": {"x": {"type": "integer"}}},
                "list": {"type": "array", "items": {"type": "dict"}},
                "maybe": {"type": ["dict", "null"]},
                "any": {"anyOf": [{"type": "dict"}, {"type": "string"}]}
            }
        });
        let out = normalize_schema(&schema);
        assert_eq!(out["type"], "object");
        assert_eq!(out["properties"]["inner"]["type"], "object");
        assert_eq!(out["properties"]["list"]["items"]["type"], "object");
        assert_eq!(
            out["properties"]["maybe"]["type"],
            json!(["object", "null"])
        );
        assert_eq!(out["properties"]["any"]["anyOf"][0]["type"], "object");
        // Values that merely say "dict" (an enum) are data, not a type: kept.
        assert_eq!(out["properties"]["type"]["enum"], json!(["dict"]));
        assert_eq!(out["properties"]["type"]["type"], "string");
        assert!(!out.to_string().contains("\"type\":\"dict\""));
    }
}
