//! `kura-bench machine`: yardsticks of the machine the other figures were taken on.
//!
//! "This 2-core machine" is not one machine: the host behind it changes between sessions, and
//! the same binary has measured `decide()` at 101 ns on one day and 240 ns on another. Three
//! fixed workloads make figures from different days comparable, and say whether a missed target
//! moved because the code changed or because the machine did:
//!
//! - **CPU**: SipHash-1-3 (`std`'s `DefaultHasher`) of consecutive integers, one thread, ns each;
//! - **memory**: dependent random reads over a 256 MiB array (a pointer chase), ns each;
//! - **disk**: a durable one-row commit, SQLite in WAL mode with `synchronous=FULL` in a
//!   temporary folder (where the server benchmarks keep their databases), p50 and p99. Every
//!   consented read waits for one such commit (its audit entry), so this bounds the read p50.
//!
//! Each is the median of several repetitions. `kura-bench all` runs it first and also reports the
//! CPU time the hypervisor took away from this machine over the whole run (`steal` in
//! `/proc/stat`).

use std::hash::Hasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::figures::{RunFlags, durable_sqlite, percentile};

/// `kura-bench machine`: yardsticks of the machine.
#[derive(Debug, Default, clap::Args)]
pub struct MachineArgs {
    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug)]
pub struct MachineOptions {
    pub hashes: u64,
    /// Elements of the pointer-chase array (8 bytes each) and reads timed over it.
    pub chase_len: usize,
    pub chase_reads: usize,
    pub commits: usize,
    pub json: bool,
}

impl MachineOptions {
    pub fn from_args(args: &MachineArgs) -> Self {
        if args.run.smoke {
            Self { hashes: 100_000, chase_len: 1 << 16, chase_reads: 10_000, commits: 20, json: args.run.json }
        } else {
            Self { hashes: 20_000_000, chase_len: 32 << 20, chase_reads: 2_000_000, commits: 400, json: args.run.json }
        }
    }
}

#[derive(Debug)]
pub struct MachineReport {
    pub cores: usize,
    pub hash_ns: f64,
    pub memory_ns: f64,
    pub commit_ms_p50: f64,
    pub commit_ms_p99: f64,
    pub commits: usize,
}

/// Repetitions of the CPU and memory yardsticks; the median is reported.
const REPEATS: usize = 5;

pub fn run_machine_benchmark(options: &MachineOptions) -> anyhow::Result<MachineReport> {
    let hash_ns = median((0..REPEATS).map(|_| hash_ns(options.hashes)).collect());
    let memory_ns = {
        let chain = chase_chain(options.chase_len);
        median((0..REPEATS).map(|_| chase_ns(&chain, options.chase_reads)).collect())
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut commits = runtime.block_on(durable_commits(options.commits))?;
    commits.sort();
    let ms = |share: f64| percentile(&commits, share).as_secs_f64() * 1e3;
    Ok(MachineReport {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        hash_ns,
        memory_ns,
        commit_ms_p50: ms(0.50),
        commit_ms_p99: ms(0.99),
        commits: commits.len(),
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn hash_ns(count: u64) -> f64 {
    let start = Instant::now();
    let mut acc = 0u64;
    for i in 0..count {
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write_u64(black_box(i));
        acc ^= hasher.finish();
    }
    black_box(acc);
    start.elapsed().as_secs_f64() * 1e9 / count.max(1) as f64
}

/// One cycle through all `len` slots in a seeded random order: `next[i]` is the slot read after
/// `i`, so every read depends on the one before and no prefetcher can guess it.
fn chase_chain(len: usize) -> Vec<u64> {
    let mut order: Vec<u64> = (0..len as u64).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..order.len()).rev() {
        // xorshift64*: a fixed, seeded shuffle.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let j = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut next = vec![0u64; len];
    for pair in order.windows(2) {
        next[pair[0] as usize] = pair[1];
    }
    if let (Some(&last), Some(&first)) = (order.last(), order.first()) {
        next[last as usize] = first;
    }
    next
}

fn chase_ns(chain: &[u64], reads: usize) -> f64 {
    let start = Instant::now();
    let mut at = 0usize;
    for _ in 0..reads {
        at = chain[at] as usize;
    }
    black_box(at);
    start.elapsed().as_secs_f64() * 1e9 / reads.max(1) as f64
}

/// Durable one-row commits in a fresh database; the first tenth warms up and is not kept.
async fn durable_commits(count: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let pool = durable_sqlite(&dir.path().join("yardstick.db"), 1).await?;
    sqlx::query("CREATE TABLE entries (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)").execute(&pool).await?;
    let warm_up = count / 10;
    let mut times = Vec::with_capacity(count);
    for i in 0..warm_up + count {
        let began = Instant::now();
        let mut transaction = pool.begin().await?;
        sqlx::query("INSERT INTO entries (body) VALUES (?)")
            .bind(vec![i as u8; 200])
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        if i >= warm_up {
            times.push(began.elapsed());
        }
    }
    pool.close().await;
    Ok(times)
}

/// CPU time the hypervisor gave to others (`steal` in `/proc/stat`), in clock ticks summed over
/// all cores, and all CPU time; `None` where there is no `/proc/stat`.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    Some((*fields.get(7)?, fields.iter().take(8).sum()))
}

/// The share of CPU time stolen between two [`cpu_ticks`] readings.
pub fn stolen_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((steal0, total0), (steal1, total1)) = (before?, after?);
    let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
    Some(steal1.saturating_sub(steal0) as f64 / total as f64)
}

impl MachineReport {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "benchmark": "machine",
            "cores": self.cores,
            "cpu_siphash13_ns": self.hash_ns,
            "memory_random_read_ns": self.memory_ns,
            "durable_commit_ms_p50": self.commit_ms_p50,
            "durable_commit_ms_p99": self.commit_ms_p99,
            "commits": self.commits,
        })
    }

    pub fn to_markdown(&self) -> String {
        format!(
            "kura-bench machine: {} cores; yardsticks for comparing figures across days and hosts\n\n\
             | yardstick | value |\n| --- | --- |\n\
             | CPU: SipHash-1-3 of an integer, one thread | {:.2} ns |\n\
             | memory: dependent random read over 256 MiB | {:.1} ns |\n\
             | disk: durable one-row SQLite commit (WAL, `synchronous=FULL`), p50 / p99 of {} | {:.3} ms / {:.3} ms |\n",
            self.cores, self.hash_ns, self.memory_ns, self.commits, self.commit_ms_p50, self.commit_ms_p99
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chase_visits_every_slot_once_per_cycle() {
        let chain = chase_chain(1000);
        let mut seen = vec![false; chain.len()];
        let mut at = 0usize;
        for _ in 0..chain.len() {
            assert!(!seen[at], "slot {at} visited twice");
            seen[at] = true;
            at = chain[at] as usize;
        }
        assert_eq!(at, 0, "one cycle returns to the start");
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn stolen_share_is_the_ratio_of_differences() {
        assert_eq!(stolen_share(Some((10, 1000)), Some((30, 1200))), Some(0.1));
        assert_eq!(stolen_share(Some((10, 1000)), Some((10, 1000))), None);
        assert_eq!(stolen_share(None, Some((10, 1000))), None);
    }
}
