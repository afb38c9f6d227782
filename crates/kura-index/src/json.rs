//! The JSON form of queries, as the research API receives it. Each node is an object with exactly
//! one key; errors name the path to the offending node, `all[2].value.op`.

use kura_core::labels::Label;
use serde_json::{Map, Value};

use crate::query::{Comparison, Complexity, MAX_DEPTH, Query, QueryError, check_limits};
use crate::text::parse_text;

const NODE_KEYS: &str = "label, age, value, all, any, not or text";

/// Parses the JSON form and returns the query in normal form (see [`Query::normalized`]).
pub fn parse_json(value: &Value) -> Result<Query, QueryError> {
    let query = node(value, &Path::root(), 0)?;
    check_limits(&query)?;
    Ok(query.normalized())
}

/// Where in the document a node sits, for error messages.
struct Path(String);

impl Path {
    fn root() -> Self {
        Self(String::new())
    }

    fn key(&self, key: &str) -> Self {
        if self.0.is_empty() { Self(key.to_owned()) } else { Self(format!("{}.{key}", self.0)) }
    }

    fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    fn error(&self, message: impl Into<String>) -> QueryError {
        let path = if self.0.is_empty() { "query".to_owned() } else { self.0.clone() };
        QueryError::Json { path, message: message.into() }
    }
}

fn node(value: &Value, path: &Path, depth: usize) -> Result<Query, QueryError> {
    let Some(object) = value.as_object() else {
        return Err(path.error(format!("expected an object with one of {NODE_KEYS}")));
    };
    let mut entries = object.iter();
    let (key, inner) = match (entries.next(), object.len()) {
        (Some(entry), 1) => entry,
        (None, _) => return Err(path.error(format!("expected one of {NODE_KEYS}"))),
        _ => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(path.error(format!("expected exactly one key but found {}", keys.join(", "))));
        }
    };
    let here = path.key(key);
    match key.as_str() {
        "label" => Ok(Query::Label(label(inner, &here)?)),
        "age" => age(inner, &here),
        "value" => value_comparison(inner, &here),
        "all" | "any" => {
            if depth >= MAX_DEPTH {
                return Err(QueryError::TooComplex(Complexity::TooDeep));
            }
            let children = match inner.as_array() {
                Some(items) if !items.is_empty() => items,
                _ => return Err(here.error("expected a non-empty list of queries")),
            };
            let children = children
                .iter()
                .enumerate()
                .map(|(index, child)| node(child, &here.index(index), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "all" { Query::All(children) } else { Query::Any(children) })
        }
        "not" => {
            if depth >= MAX_DEPTH {
                return Err(QueryError::TooComplex(Complexity::TooDeep));
            }
            Ok(Query::Not(Box::new(node(inner, &here, depth + 1)?)))
        }
        "text" => {
            let Some(text) = inner.as_str() else {
                return Err(here.error("expected a string in the text form"));
            };
            parse_text(text).map_err(|error| match error {
                QueryError::TooComplex(_) => error,
                other => here.error(other.to_string()),
            })
        }
        _ => Err(here.error(format!("unknown key; expected one of {NODE_KEYS}"))),
    }
}

fn label(value: &Value, path: &Path) -> Result<Label, QueryError> {
    let Some(text) = value.as_str() else {
        return Err(path.error("expected a label written system:code"));
    };
    Label::parse(text).map_err(|error| path.error(error.to_string()))
}

fn age(value: &Value, path: &Path) -> Result<Query, QueryError> {
    let Some(object) = value.as_object() else {
        return Err(path.error("expected an object with min, max or both"));
    };
    reject_unknown_keys(object, &["min", "max"], path)?;
    let years = |key: &str| -> Result<Option<u32>, QueryError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(years) => years
                .as_u64()
                .and_then(|years| u32::try_from(years).ok())
                .map(Some)
                .ok_or_else(|| path.key(key).error("expected a whole number of years")),
        }
    };
    let (min, max) = (years("min")?, years("max")?);
    match (min, max) {
        (None, None) => Err(path.error("expected min, max or both")),
        (Some(min), Some(max)) if min > max => Err(path.error(format!("min {min} is greater than max {max}"))),
        _ => Ok(Query::Age { min, max }),
    }
}

fn value_comparison(value: &Value, path: &Path) -> Result<Query, QueryError> {
    let Some(object) = value.as_object() else {
        return Err(path.error("expected an object with code, op and value"));
    };
    reject_unknown_keys(object, &["code", "op", "value"], path)?;
    let required = |key: &str| object.get(key).ok_or_else(|| path.error(format!("missing key {key}")));
    let code = label(required("code")?, &path.key("code"))?;
    let op = required("op")?
        .as_str()
        .and_then(Comparison::from_symbol)
        .ok_or_else(|| path.key("op").error("expected one of <, <=, >, >=, ="))?;
    let number = required("value")?
        .as_f64()
        .filter(|number| number.is_finite())
        .ok_or_else(|| path.key("value").error("expected a number"))?;
    Ok(Query::Value { code, op, value: number })
}

fn reject_unknown_keys(object: &Map<String, Value>, known: &[&str], path: &Path) -> Result<(), QueryError> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(path.key(key).error(format!("unknown key; expected {}", join_or(known)))),
        None => Ok(()),
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
