//! Walking a `serde_json::Value` while remembering where we are, so that an error names the
//! field the way the client wrote it (`components[1].buttons[0].text`). Cloud API clients get
//! that path back; serde's own errors only give a line and column.

use serde_json::{Number, Value};

/// What went wrong, and where. Converted into each parser's public error type.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
    /// The field was absent (Cloud API 131008) rather than wrong (131009).
    pub(crate) missing: bool,
}

/// A value and its path from the document's root (`""` for the root itself).
#[derive(Debug)]
pub(crate) struct Node<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Node<'a> {
    pub(crate) fn root(value: &'a Value) -> Self {
        Self {
            value,
            path: String::new(),
        }
    }

    pub(crate) fn value(&self) -> &'a Value {
        self.value
    }

    /// The path of `key` below this node, whether or not it is present.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError {
            field: self.path.clone(),
            message: message.into(),
            missing: false,
        }
    }

    /// The member `key`; `None` when absent or `null`. Fails when this node is not an object.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Node<'a>>, FieldError> {
        let Value::Object(map) = self.value else {
            return Err(self.error("must be a JSON object"));
        };
        Ok(map.get(key).filter(|v| !v.is_null()).map(|value| Node {
            value,
            path: self.path_of(key),
        }))
    }

    pub(crate) fn require(&self, key: &str) -> Result<Node<'a>, FieldError> {
        self.get(key)?.ok_or_else(|| FieldError {
            field: self.path_of(key),
            message: "is required".to_owned(),
            missing: true,
        })
    }

    pub(crate) fn str(&self) -> Result<&'a str, FieldError> {
        self.value
            .as_str()
            .ok_or_else(|| self.error("must be a string"))
    }

    pub(crate) fn number(&self) -> Result<&'a Number, FieldError> {
        match self.value {
            Value::Number(n) => Ok(n),
            _ => Err(self.error("must be a number")),
        }
    }

    /// A string, or a number taken as its JSON spelling (coordinates come either way).
    pub(crate) fn str_or_number(&self) -> Result<String, FieldError> {
        match self.value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(self.error("must be a number or a string")),
        }
    }

    pub(crate) fn items(&self) -> Result<Vec<Node<'a>>, FieldError> {
        let Value::Array(items) = self.value else {
            return Err(self.error("must be an array"));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| Node {
                value,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    pub(crate) fn require_str(&self, key: &str) -> Result<&'a str, FieldError> {
        self.require(key)?.str()
    }

    pub(crate) fn optional_str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        self.get(key)?.map(|node| node.str()).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_follow_members_and_array_indexes() {
        let doc = json!({"components": [{"text": 1}, {"buttons": [{"text": "x"}]}]});
        let root = Node::root(&doc);
        let components = root.require("components").unwrap().items().unwrap();
        let wrong = components[0].require_str("text").unwrap_err();
        assert_eq!(wrong.field, "components[0].text");
        assert_eq!(wrong.message, "must be a string");
        assert!(!wrong.missing);

        let buttons = components[1].require("buttons").unwrap().items().unwrap();
        let missing = buttons[0].require("url").unwrap_err();
        assert_eq!(missing.field, "components[1].buttons[0].url");
        assert!(missing.missing);
    }

    #[test]
    fn null_counts_as_absent() {
        let doc = json!({"example": null});
        assert!(Node::root(&doc).get("example").unwrap().is_none());
    }
}
