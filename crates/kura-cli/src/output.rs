//! What the CLI prints: the server's JSON as is (`--json`), or plain tables and lines for
//! people. Results go to stdout; progress, notes and errors to stderr.

use serde_json::Value;

/// Prints a JSON value, pretty, on stdout.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// A plain text table: a header row and aligned columns, no borders.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line without trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate().take(columns) {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < columns {
                    text.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(cell.chars().count())));
                }
            }
            text.trim_end().to_owned()
        };
        let mut out = line(&self.headers);
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row));
        }
        out
    }

    /// Prints the table, or `empty` when it has no rows.
    pub fn print_or(&self, empty: &str) {
        if self.is_empty() {
            println!("{empty}");
        } else {
            println!("{}", self.render());
        }
    }
}

/// Joins displayable items with commas, or `-` when there are none.
pub fn comma_list<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    let joined = items.into_iter().map(|i| i.as_ref().to_owned()).collect::<Vec<_>>().join(",");
    if joined.is_empty() { "-".to_owned() } else { joined }
}

/// `Some(text)` or `-`.
pub fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// The wire name of a serde enum value such as a category or an action.
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// Whether `error` comes from writing to a reader that went away (`kura … | head`), which Unix
/// tools treat as a normal end, not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// `println!` panics when standard output is a closed pipe. Ends the process quietly with
/// status 0 in that case instead of printing a panic and a backtrace; every other panic is
/// reported as before.
pub fn end_quietly_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let mut table = Table::new(["ID", "NAME", "KIND"]);
        table.row(vec!["1".into(), "Aoba General Hospital".into(), "institution".into()]);
        table.row(vec!["22".into(), "Sakura".into(), "".into()]);
        assert_eq!(
            table.render(),
            "ID  NAME                   KIND\n\
             1   Aoba General Hospital  institution\n\
             22  Sakura"
        );
    }

    #[test]
    fn lists_and_names() {
        assert_eq!(comma_list(["a", "b"]), "a,b");
        assert_eq!(comma_list(Vec::<String>::new()), "-");
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("x")), "x");
        assert_eq!(wire_name(&kura_api_types::Category::PatientEntered), "patient_entered");
        assert_eq!(wire_name(&kura_api_types::Power::ManageGrants), "manage_grants");
    }
}
