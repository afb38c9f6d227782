//! SQL text both backends accept: numbered placeholders, multi-row `VALUES` lists and how many
//! values one statement binds.

use std::collections::BTreeSet;

/// How many values one `IN (...)` list or one multi-row `INSERT` binds at most: well inside
/// SQLite's and PostgreSQL's limits on bind parameters per statement.
pub(crate) const IN_LIST_CHUNK: usize = 500;

/// `$start, $start+1, ...`: `count` numbered placeholders, the dialect both backends accept.
pub(crate) fn placeholders(start: usize, count: usize) -> String {
    (start..start + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Each subject once, in a stable order: a subject takes part in an analysis at most once, and
/// PostgreSQL refuses an upsert that touches one row twice.
pub(crate) fn distinct(subjects: &[String]) -> Vec<&str> {
    subjects.iter().map(String::as_str).collect::<BTreeSet<_>>().into_iter().collect()
}

/// `($1, $2), ($1, $3), ...`: rows that share the first bind value, the others following it.
pub(crate) fn rows_sharing_first(count: usize) -> String {
    (2..count + 2).map(|i| format!("($1, ${i})")).collect::<Vec<_>>().join(", ")
}

/// Rows per multi-row INSERT at most: 64 rows of up to 12 columns (the audit log's) bind 768
/// values, far below either backend's limit.
const ROWS_PER_INSERT: usize = 64;

/// How `rows` rows are cut into multi-row INSERTs, as (first row, row count): statements of
/// [`ROWS_PER_INSERT`] rows, then the rest by its binary digits (32, 16, ..., 1). A statement
/// is a round trip to the connection (on SQLite a hop to sqlx's worker thread, made while the
/// write lock is held), so a bundle's hundreds of parts, labels and values take a few
/// statements instead of one each; and each table needs only a few statement texts, which sqlx
/// prepares once per connection.
pub(crate) fn insert_chunks(rows: usize) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut size = ROWS_PER_INSERT;
    while start < rows {
        while size > rows - start {
            size /= 2;
        }
        chunks.push((start, size));
        start += size;
    }
    chunks
}

/// `{insert} VALUES ($1, ...), (...) {suffix}` for `rows` rows of `columns` values each.
pub(crate) fn values_sql(insert: &str, columns: usize, rows: usize, suffix: &str) -> String {
    let values = (0..rows).map(|r| format!("({})", placeholders(r * columns + 1, columns))).collect::<Vec<_>>();
    format!("{insert} VALUES {} {suffix}", values.join(", ")).trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_cut_into_few_statements_of_few_sizes() {
        assert!(insert_chunks(0).is_empty());
        assert_eq!(insert_chunks(1), [(0, 1)]);
        assert_eq!(insert_chunks(64), [(0, 64)]);
        assert_eq!(insert_chunks(181), [(0, 64), (64, 64), (128, 32), (160, 16), (176, 4), (180, 1)]);
        for rows in 0..300 {
            let chunks = insert_chunks(rows);
            // Contiguous, covering every row once, in sizes that are powers of two up to 64.
            let mut next = 0;
            for (start, size) in &chunks {
                assert_eq!(*start, next);
                assert!(size.is_power_of_two() && *size <= ROWS_PER_INSERT);
                next += size;
            }
            assert_eq!(next, rows);
            assert!(chunks.len() <= rows / ROWS_PER_INSERT + 6);
        }
    }

    #[test]
    fn multi_row_values_are_numbered_in_row_order() {
        assert_eq!(
            values_sql("INSERT INTO t (a, b)", 2, 2, "ON CONFLICT DO NOTHING"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(values_sql("INSERT INTO t (a)", 1, 1, ""), "INSERT INTO t (a) VALUES ($1)");
    }
}
