//! JSON-schema clean-up before tools are offered to a provider.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::types::{ChatRequest, ChatResponse, Message};

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

/// OpenAI and Anthropic accept tool names matching `^[a-zA-Z0-9_-]{1,64}$` only, while datasets
/// use names such as `maps.shortest_path` (BFCL). This maps such names to safe wire names for the
/// request and maps the model's tool calls back, so callers only ever see the original names.
#[derive(Debug, Default)]
pub struct ToolNames {
    to_wire: HashMap<String, String>,
    from_wire: HashMap<String, String>,
}

impl ToolNames {
    /// The renames needed for the tools (and earlier tool calls) of `request`; empty when every
    /// name is already valid.
    pub fn for_request(request: &ChatRequest) -> Self {
        let mut names = Self::default();
        let history = request.messages.iter().flat_map(|m| match m {
            Message::Assistant { tool_calls, .. } => {
                tool_calls.iter().map(|c| c.name.as_str()).collect()
            }
            _ => Vec::new(),
        });
        let all: Vec<&str> = request
            .tools
            .iter()
            .map(|t| t.name.as_str())
            .chain(history)
            .collect();
        // Valid names keep themselves, so they are reserved first.
        for name in &all {
            if is_valid_tool_name(name) {
                names
                    .from_wire
                    .insert((*name).to_owned(), (*name).to_owned());
            }
        }
        for name in all {
            if is_valid_tool_name(name) || names.to_wire.contains_key(name) {
                continue;
            }
            let base = sanitize_tool_name(name);
            let mut wire = base.clone();
            let mut n = 2;
            while names.from_wire.contains_key(&wire) {
                let suffix = format!("_{n}");
                let keep = 64usize.saturating_sub(suffix.len()).min(base.len());
                wire = format!("{}{suffix}", &base[..keep]);
                n += 1;
            }
            names.to_wire.insert(name.to_owned(), wire.clone());
            names.from_wire.insert(wire, name.to_owned());
        }
        names
    }

    /// The request with wire names (borrowed unchanged when nothing needs renaming).
    pub fn apply<'a>(&self, request: &'a ChatRequest) -> Cow<'a, ChatRequest> {
        if self.to_wire.is_empty() {
            return Cow::Borrowed(request);
        }
        let mut out = request.clone();
        for tool in &mut out.tools {
            if let Some(wire) = self.to_wire.get(&tool.name) {
                tool.name.clone_from(wire);
            }
        }
        for message in &mut out.messages {
            if let Message::Assistant { tool_calls, .. } = message {
                for call in tool_calls {
                    if let Some(wire) = self.to_wire.get(&call.name) {
                        call.name.clone_from(wire);
                    }
                }
            }
        }
        Cow::Owned(out)
    }

    /// Puts the original names back into the model's tool calls.
    pub fn restore(&self, response: &mut ChatResponse) {
        if self.to_wire.is_empty() {
            return;
        }
        for call in &mut response.tool_calls {
            if let Some(original) = self.from_wire.get(&call.name) {
                call.name.clone_from(original);
            }
        }
    }
}

/// True when providers accept `name` as a tool name as is.
pub fn is_valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn sanitize_tool_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push_str("tool");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ToolCall, ToolSpec};
    use serde_json::json;

    #[test]
    fn dotted_tool_names_are_sent_safe_and_restored_in_answers() {
        let spec = |name: &str| ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({}),
        };
        let mut request = ChatRequest::new(vec![Message::user("x")]);
        request.tools = vec![
            spec("maps.shortest_path"),
            spec("maps_shortest_path"),
            spec("ok"),
        ];
        let names = ToolNames::for_request(&request);
        let wire = names.apply(&request);
        let wire_names: Vec<&str> = wire.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            wire_names,
            ["maps_shortest_path_2", "maps_shortest_path", "ok"]
        );
        let mut response = ChatResponse {
            content: None,
            tool_calls: vec![ToolCall {
                id: "1".into(),
                name: "maps_shortest_path_2".into(),
                arguments: json!({}),
            }],
            usage: crate::types::Usage::default(),
            finish_reason: None,
        };
        names.restore(&mut response);
        assert_eq!(response.tool_calls[0].name, "maps.shortest_path");
        assert!(matches!(
            ToolNames::for_request(&ChatRequest::default()).apply(&request),
            Cow::Borrowed(_)
        ));
    }

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
