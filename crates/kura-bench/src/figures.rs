//! Helpers shared by the benchmarks' reports: percentiles, grouped digits, process memory and
//! the calendar days the populations are born on.

use kura_core::time::days_from_civil;

/// Days since 1970-01-01 of a civil date, as the index stores birth days.
pub fn days_32(year: i64, month: u32, day: u32) -> anyhow::Result<i32> {
    Ok(i32::try_from(days_from_civil(year, month, day))?)
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile<T: Copy + Default>(sorted: &[T], share: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A pool on a new SQLite database at `path` with the durability Kura's own database has (WAL,
/// `synchronous=FULL`): the floor the server benchmarks compare against.
pub async fn durable_sqlite(path: &std::path::Path, connections: u32) -> anyhow::Result<sqlx::SqlitePool> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(std::time::Duration::from_secs(10));
    Ok(SqlitePoolOptions::new().max_connections(connections).connect_with(options).await?)
}

/// Resident and peak resident memory of this process, from `/proc/self/status` (Linux only).
pub fn process_memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let kilobytes = line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            kilobytes.parse::<u64>().ok().map(|kilobytes| kilobytes * 1024)
        })
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `Some(bytes)` as `895 MiB`, `None` as `n/a`.
pub fn mebibytes(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |bytes| format!("{:.0} MiB", bytes as f64 / 1048576.0))
}

/// `1234567` as `1,234,567`.
pub fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A whole number given to an option (`1_000_000` is allowed).
pub fn number(text: &str) -> Result<u64, String> {
    text.replace('_', "").parse().map_err(|_| format!("{text:?} is not a number"))
}

/// [`number`] as a count.
pub fn count(text: &str) -> Result<usize, String> {
    usize::try_from(number(text)?).map_err(|e| e.to_string())
}

/// Parses `flags` as one subcommand's options, for tests: the options' parse error as text.
#[cfg(test)]
pub fn parse_flags<A: clap::Args>(flags: &[&str]) -> Result<A, String> {
    let command = A::augment_args(clap::Command::new("kura-bench"));
    let matches = command
        .try_get_matches_from(std::iter::once("kura-bench").chain(flags.iter().copied()))
        .map_err(|e| e.to_string())?;
    A::from_arg_matches(&matches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_formatted() {
        let check = |number: u64, expected: &str| assert_eq!(grouped(number), expected);
        check(0, "0");
        check(999, "999");
        check(1_000, "1,000");
        check(1_234_567, "1,234,567");
        let samples = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!((percentile(&samples, 0.5), percentile(&samples, 0.99), percentile(&samples, 0.0)), (5, 10, 1));
        assert_eq!(percentile::<u64>(&[], 0.5), 0);
        assert_eq!((mebibytes(Some(3 << 20)), mebibytes(None)), ("3 MiB".to_owned(), "n/a".to_owned()));
    }
}

/// The options every benchmark takes: `--json` and `--smoke`.
#[derive(Debug, Default, Clone, Copy, clap::Args)]
pub struct RunFlags {
    /// Print only the JSON figures.
    #[arg(long)]
    pub json: bool,
    /// A tiny run that only checks that the harness works (CI).
    #[arg(long)]
    pub smoke: bool,
}

impl RunFlags {
    /// The flags of one section of `kura-bench all`: tables, tiny when `smoke`.
    pub fn smoke(smoke: bool) -> Self {
        Self { json: false, smoke }
    }
}
