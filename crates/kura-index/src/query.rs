//! The query model shared by both query forms, its limits, its normal form and its canonical
//! text (see the crate documentation for the grammar).

use kura_core::labels::Label;

#[cfg(test)]
mod tests;

/// At most this many criteria (labels, ages and value comparisons) in one query.
pub const MAX_CRITERIA: usize = 200;

/// At most this many levels of AND, OR and NOT around any criterion.
pub const MAX_DEPTH: usize = 20;

/// A cohort query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Subjects with this label. Hierarchical codes are expanded at ingest, so `icd10:E11`
    /// matches a subject whose records say `E11.9`.
    Label(Label),
    /// Subjects whose age in whole years lies within the inclusive bounds; an absent `min` is 0.
    /// Subjects without a birth date, or born after the evaluation day, have no age.
    Age { min: Option<u32>, max: Option<u32> },
    /// Subjects with at least one value for `code` that satisfies the comparison.
    Value { code: Label, op: Comparison, value: f64 },
    /// Subjects matching every sub-query. The parsers never produce an empty list.
    All(Vec<Query>),
    /// Subjects matching at least one sub-query. The parsers never produce an empty list.
    Any(Vec<Query>),
    /// Indexed subjects not matching the sub-query.
    Not(Box<Query>),
}

/// How a value compares to the query's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Comparison {
    /// The operator as written in both query forms.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "=",
        }
    }

    pub fn from_symbol(symbol: &str) -> Option<Self> {
        match symbol {
            "<" => Some(Self::Lt),
            "<=" => Some(Self::Le),
            ">" => Some(Self::Gt),
            ">=" => Some(Self::Ge),
            "=" => Some(Self::Eq),
            _ => None,
        }
    }

    /// Whether `value <op> threshold` holds; false whenever either side is NaN.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Eq => value == threshold,
        }
    }
}

/// Why a query was refused. Each variant says where the problem is, so that a researcher can fix
/// the query without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query is empty")]
    Empty,
    /// A text query is malformed at `column`, the 1-based byte position in the input.
    #[error("at column {column}: {message}")]
    Text { column: usize, message: String },
    /// A JSON query is malformed at `path`, written `all[2].value.op` (`query` for the top).
    #[error("{path}: {message}")]
    Json { path: String, message: String },
    #[error("the query is too complex: {0}")]
    TooComplex(Complexity),
}

/// Which of the query limits was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Complexity {
    #[error("it has more than {} criteria", MAX_CRITERIA)]
    TooManyCriteria,
    #[error("it nests deeper than {} levels", MAX_DEPTH)]
    TooDeep,
}

/// Refuses queries beyond [`MAX_CRITERIA`] criteria or [`MAX_DEPTH`] levels.
pub(crate) fn check_limits(query: &Query) -> Result<(), QueryError> {
    fn walk(query: &Query, depth: usize, criteria: &mut usize) -> Result<(), Complexity> {
        match query {
            Query::Label(_) | Query::Age { .. } | Query::Value { .. } => {
                *criteria += 1;
                if *criteria > MAX_CRITERIA {
                    return Err(Complexity::TooManyCriteria);
                }
                Ok(())
            }
            Query::All(children) | Query::Any(children) => {
                if depth >= MAX_DEPTH {
                    return Err(Complexity::TooDeep);
                }
                children.iter().try_for_each(|child| walk(child, depth + 1, criteria))
            }
            Query::Not(inner) => {
                if depth >= MAX_DEPTH {
                    return Err(Complexity::TooDeep);
                }
                walk(inner, depth + 1, criteria)
            }
        }
    }
    walk(query, 0, &mut 0).map_err(QueryError::TooComplex)
}

impl Query {
    /// The normal form: nested AND inside AND (and OR inside OR) flattened, children sorted by
    /// their canonical text with duplicates dropped, a single child standing for its list,
    /// `NOT NOT x` as `x`, an age without bounds as `age:0..`, and -0 as 0. Every step keeps the
    /// meaning, so two queries that differ only in these ways share one canonical text. Both
    /// parsers return queries in this form.
    pub fn normalized(self) -> Query {
        match self {
            Query::Label(_) => self,
            Query::Age { min: None, max: None } => Query::Age { min: Some(0), max: None },
            Query::Age { .. } => self,
            Query::Value { code, op, value } => {
                // Adding 0.0 turns -0 into +0 and leaves every other value as it was.
                Query::Value { code, op, value: value + 0.0 }
            }
            Query::Not(inner) => match inner.normalized() {
                Query::Not(twice) => *twice,
                inner => Query::Not(Box::new(inner)),
            },
            Query::All(children) => normalize_list(children, true),
            Query::Any(children) => normalize_list(children, false),
        }
    }
}

fn normalize_list(children: Vec<Query>, all: bool) -> Query {
    let mut flat = Vec::with_capacity(children.len());
    for child in children {
        match (child.normalized(), all) {
            (Query::All(grandchildren), true) | (Query::Any(grandchildren), false) => flat.extend(grandchildren),
            (child, _) => flat.push(child),
        }
    }
    let mut keyed: Vec<(String, Query)> = flat.into_iter().map(|child| (render(&child), child)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    let mut children: Vec<Query> = keyed.into_iter().map(|(_, child)| child).collect();
    if children.len() == 1 {
        return children.pop().unwrap_or(Query::All(Vec::new()));
    }
    if all { Query::All(children) } else { Query::Any(children) }
}

/// The canonical text of a query: the text form of its normal form, so equal meanings written
/// differently (reordered, regrouped, repeated) give the same string. For every query either
/// parser returns, `parse_text(&to_text(&q)) == Ok(q)`.
pub fn to_text(query: &Query) -> String {
    render(&query.clone().normalized())
}

/// The text form of a query exactly as it is structured: parentheses around every AND or OR
/// inside another, so that reading it back rebuilds the same tree.
fn render(query: &Query) -> String {
    let mut out = String::new();
    render_into(query, &mut out);
    out
}

fn render_into(query: &Query, out: &mut String) {
    match query {
        Query::Label(label) => render_label(label, out),
        Query::Age { min, max } => {
            out.push_str("age:");
            match (min, max) {
                (Some(min), Some(max)) if min == max => out.push_str(&min.to_string()),
                _ => {
                    if let Some(min) = min {
                        out.push_str(&min.to_string());
                    }
                    out.push_str("..");
                    if let Some(max) = max {
                        out.push_str(&max.to_string());
                    }
                }
            }
        }
        Query::Value { code, op, value } => {
            render_label(code, out);
            out.push_str(op.symbol());
            // Display prints the shortest digits that read back as the same f64, never with an
            // exponent, which is what the text grammar accepts.
            out.push_str(&value.to_string());
        }
        Query::Not(inner) => {
            out.push_str("NOT ");
            render_operand(inner, out);
        }
        Query::All(children) | Query::Any(children) => {
            let separator = if matches!(query, Query::All(_)) { " AND " } else { " OR " };
            for (position, child) in children.iter().enumerate() {
                if position > 0 {
                    out.push_str(separator);
                }
                render_operand(child, out);
            }
        }
    }
}

fn render_operand(query: &Query, out: &mut String) {
    if matches!(query, Query::All(_) | Query::Any(_)) {
        out.push('(');
        render_into(query, out);
        out.push(')');
    } else {
        render_into(query, out);
    }
}

/// A label bare when the text grammar reads it back as that label, otherwise quoted: codes may
/// hold `(`, `)`, `<`, `>` or `=`, and a label of the system `age` would read as an age.
fn render_label(label: &Label, out: &mut String) {
    let text = label.as_str();
    let bare = !text.starts_with("age:") && !text.contains(['(', ')', '<', '>', '=']);
    if bare {
        out.push_str(text);
        return;
    }
    out.push('"');
    for character in text.chars() {
        if matches!(character, '"' | '\\') {
            out.push('\\');
        }
        out.push(character);
    }
    out.push('"');
}
