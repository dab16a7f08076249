//! One training conversation and its validation.
//!
//! Two input shapes are accepted (see `docs/data-format.md`): `{"messages": [{"role", "content"},
//! ...]}` and `{"instruction", "response"}` with an optional `system`; both may carry `id` and
//! `language`. A valid conversation is an optional leading system turn, then user and assistant
//! turns alternating, starting with user and ending with assistant, no assistant turn empty.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub id: Option<String>,
    pub language: Option<String>,
    pub messages: Vec<Message>,
}

/// Why a record is invalid: the offending field (a JSON path such as `messages[2].role`) and
/// the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", field_prefix(.field))]
pub struct RecordError {
    pub field: String,
    pub reason: String,
}

/// "field `F`: " before the reason, when the error is about a field.
fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> RecordError {
    RecordError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, RecordError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(err(path, format!("expected a string, got {}", kind(other)))),
    }
}

fn required_string(obj: &Map<String, Value>, key: &str, path: &str) -> Result<String, RecordError> {
    string_field(obj, key, path)?.ok_or_else(|| err(path, "missing"))
}

impl Record {
    /// Parses and validates one JSON line.
    pub fn parse(line: &str) -> Result<Self, RecordError> {
        let value: Value = serde_json::from_str(line).map_err(|e| err("", format!("invalid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Validates an already parsed JSON value.
    pub fn from_value(value: &Value) -> Result<Self, RecordError> {
        let Value::Object(obj) = value else {
            return Err(err("", format!("expected a JSON object, got {}", kind(value))));
        };
        let id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => return Err(err("id", format!("expected a string or a number, got {}", kind(other)))),
        };
        let language = string_field(obj, "language", "language")?;
        let messages = if let Some(msgs) = obj.get("messages") {
            let Value::Array(items) = msgs else {
                return Err(err("messages", format!("expected an array, got {}", kind(msgs))));
            };
            items
                .iter()
                .enumerate()
                .map(|(i, m)| parse_message(m, i))
                .collect::<Result<Vec<_>, _>>()?
        } else if obj.contains_key("instruction") || obj.contains_key("response") {
            let mut v = vec![];
            if let Some(system) = string_field(obj, "system", "system")? {
                v.push(Message {
                    role: Role::System,
                    content: system,
                });
            }
            v.push(Message {
                role: Role::User,
                content: required_string(obj, "instruction", "instruction")?,
            });
            v.push(Message {
                role: Role::Assistant,
                content: required_string(obj, "response", "response")?,
            });
            v
        } else {
            return Err(err(
                "",
                "expected a \"messages\" array or \"instruction\" and \"response\" fields",
            ));
        };
        let record = Record { id, language, messages };
        record.validate(obj.contains_key("messages"))?;
        Ok(record)
    }

    /// Checks turn order and content; `as_messages` picks field names for the errors.
    fn validate(&self, as_messages: bool) -> Result<(), RecordError> {
        let path = |i: usize, f: &str| {
            if as_messages {
                format!("messages[{i}].{f}")
            } else {
                match self.messages[i].role {
                    Role::System => "system".to_string(),
                    Role::User => "instruction".to_string(),
                    Role::Assistant => "response".to_string(),
                }
            }
        };
        if self.messages.is_empty() {
            return Err(err("messages", "empty conversation"));
        }
        let first = usize::from(self.messages[0].role == Role::System);
        for (i, m) in self.messages.iter().enumerate() {
            let expected = if i < first {
                Role::System
            } else if (i - first).is_multiple_of(2) {
                Role::User
            } else {
                Role::Assistant
            };
            if m.role != expected {
                let why = if m.role == Role::System {
                    "a system turn may only come first".to_string()
                } else {
                    format!(
                        "expected a {} turn here (turns alternate user, assistant)",
                        expected.as_str()
                    )
                };
                return Err(err(path(i, "role"), why));
            }
            if m.role == Role::Assistant && m.content.trim().is_empty() {
                return Err(err(path(i, "content"), "empty assistant turn"));
            }
        }
        if self.messages.last().map(|m| m.role) != Some(Role::Assistant) {
            return Err(err("messages", "the conversation must end with an assistant turn"));
        }
        Ok(())
    }
}

/// Validates message `i` of a conversation (`{"role": ..., "content": ...}`), naming the field
/// on error.
pub fn parse_message(m: &Value, i: usize) -> Result<Message, RecordError> {
    let Value::Object(obj) = m else {
        return Err(err(
            format!("messages[{i}]"),
            format!("expected an object, got {}", kind(m)),
        ));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(err(
                    format!("messages[{i}].role"),
                    format!("unknown role {other:?} (expected system, user or assistant)"),
                ))
            }
        },
        Some(other) => {
            return Err(err(
                format!("messages[{i}].role"),
                format!("expected a string, got {}", kind(other)),
            ))
        }
        None => return Err(err(format!("messages[{i}].role"), "missing")),
    };
    let content = required_string(obj, "content", &format!("messages[{i}].content"))?;
    Ok(Message { role, content })
}
