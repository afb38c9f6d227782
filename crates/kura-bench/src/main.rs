//! `kura-bench`: benchmarks for Kura's in-memory parts, run by hand or in CI.
//!
//! - `kura-bench index [--patients N] [--queries Q] [--seed S] [--json] [--smoke]` builds a label
//!   index over a seeded synthetic population and times five-criteria cohort searches on it.
//! - `kura-bench analysis [--patients N] [--runs R] [--seed S] [--json] [--smoke]` builds the same
//!   population and times the analysis engine (`kura-stats`): a histogram and mean of HbA1c over
//!   a diabetic cohort and over everyone, `compute` and `control` apart and end to end.
//! - `kura-bench decide [--samples N] [--json] [--smoke]` times `kura_core::policy::decide()`.
//! - `kura-bench ingest [--bundles N] [--clients C] [--resources MIN-MAX] [--json] [--smoke]`
//!   uploads a full-record set over HTTP to an in-process server on a temporary SQLite
//!   database, from 8 clients — a synthetic FHIR Bundle per patient (2,000 by default), a DICOM
//!   image for one patient in 25 and a PDF letter for another — and compares with a plain
//!   SQLite insert of the same bytes.
//! - `kura-bench reads [--records N] [--seconds S] [--resources MIN-MAX] [--json] [--smoke]`
//!   times consented reads by a grantee institution over HTTP, at 1 and 32 clients.
//! - `kura-bench peers [--patients N] [--queries Q] [--runs R] [--seed S] [--json] [--smoke]` runs
//!   the `index` searches on PostgreSQL and the `analysis` aggregate on DuckDB next to Kura.
//! - `kura-bench ledger [--people N] [--runs R] [--json] [--smoke]` builds a research
//!   organisation's disclosure ledger over a million people by a few releases and reports its
//!   heap and stored bytes and the time of one release of everyone against it.
//! - `kura-bench machine [--json] [--smoke]` measures yardsticks of the machine (CPU, memory,
//!   a durable commit), to compare figures taken on different days or hosts.
//! - `kura-bench all [--smoke]` runs them all (`reads` twice: the default 20–200-resource bundles,
//!   then `--resources 1-3` as `reads-small`; `machine` last) and prints one combined table and
//!   JSON document, with the share of CPU time the hypervisor took over the run.
//!
//! The population ([`population`]) is calibrated on the Synthea fixtures (`fixtures/synthea-r4/`).
//! This crate owns nothing the server uses and must never touch a real data directory; the
//! server benchmarks talk to their own in-process server on a loopback port only.

/// The allocator of the `kura` binary (see its `main.rs`), so that the in-process server is
/// measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod analysis_bench;
mod decide_bench;
mod figures;
mod index_bench;
mod ledger_bench;
mod machine_bench;
mod peers;
mod population;
mod server_bench;

use clap::{Parser, Subcommand};

use crate::figures::RunFlags;

use crate::analysis_bench::{AnalysisArgs, AnalysisOptions, run_analysis_benchmark};
use crate::decide_bench::{DecideArgs, DecideOptions, run_decide_benchmark};
use crate::index_bench::{IndexArgs, IndexOptions, run_index_benchmark};
use crate::ledger_bench::{LedgerArgs, LedgerOptions, run_ledger_benchmark};
use crate::machine_bench::{MachineArgs, MachineOptions, run_machine_benchmark};
use crate::peers::{PeersArgs, PeersOptions, run_peers_benchmark};
use crate::server_bench::{
    IngestArgs, IngestOptions, ReadsArgs, ReadsOptions, run_ingest_benchmark, run_reads_benchmark,
};

/// Benchmarks for Kura: a seeded synthetic population, an in-process server on loopback, and
/// the peers (PostgreSQL, DuckDB) in the same run.
#[derive(Debug, Parser)]
#[command(name = "kura-bench", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    benchmark: Benchmark,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// Five-criteria cohort searches on a label index over a seeded synthetic population.
    Index(IndexArgs),
    /// The analysis engine (kura-stats): a histogram and mean of HbA1c, compute and control apart.
    Analysis(AnalysisArgs),
    /// A research organisation's disclosure ledger: its size and the time of one release.
    Ledger(LedgerArgs),
    /// The policy check, kura_core::policy::decide().
    Decide(DecideArgs),
    /// Uploads over HTTP to an in-process server, against a plain SQLite insert of the same bytes.
    Ingest(IngestArgs),
    /// Consented reads by a grantee institution over HTTP, at 1 and 32 clients.
    Reads(ReadsArgs),
    /// The index searches on PostgreSQL and the analysis aggregate on DuckDB, next to Kura.
    Peers(PeersArgs),
    /// Yardsticks of the machine: CPU, memory, a durable commit.
    Machine(MachineArgs),
    /// Every benchmark in turn (reads twice, machine last), then one summary table and JSON document.
    All(AllArgs),
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Every benchmark at a tiny size, only to check that the harness works (CI).
    #[arg(long)]
    smoke: bool,
}

/// Prints a report: the table for people unless `--json`, then the figures on one JSON line.
fn print_report(json_only: bool, markdown: &str, figures: &serde_json::Value) -> anyhow::Result<()> {
    if !json_only {
        println!("{markdown}");
    }
    println!("{}", serde_json::to_string(figures)?);
    Ok(())
}

/// `all`: every benchmark in turn, then one summary table and one JSON document.
fn run_all(smoke: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let ticks = machine_bench::cpu_ticks();
    let mut sections: Vec<(&str, String, serde_json::Value)> = Vec::new();
    let mut timed = |name: &'static str, run: &mut dyn FnMut() -> anyhow::Result<(String, serde_json::Value)>| {
        let start = std::time::Instant::now();
        eprintln!("kura-bench all: {name}...");
        let (markdown, figures) = run()?;
        eprintln!("kura-bench all: {name} took {:.1} s", start.elapsed().as_secs_f64());
        sections.push((name, markdown, figures));
        anyhow::Ok(())
    };
    timed("index", &mut || {
        let report = run_index_benchmark(&IndexOptions::from_args(&IndexArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    timed("analysis", &mut || {
        let report = run_analysis_benchmark(&AnalysisOptions::from_args(&AnalysisArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    timed("ledger", &mut || {
        let report = run_ledger_benchmark(&LedgerOptions::from_args(&LedgerArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    timed("decide", &mut || {
        let report = run_decide_benchmark(&DecideOptions::from_args(&DecideArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    timed("ingest", &mut || {
        let report = run_ingest_benchmark(&IngestOptions::from_args(&IngestArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    timed("reads", &mut || {
        let report = run_reads_benchmark(&ReadsOptions::from_args(&ReadsArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    // The same reads of small records (a single-encounter upload, 1 to 3 resources): what a read
    // costs apart from moving a large bundle's bytes.
    timed("reads-small", &mut || {
        let small = ReadsArgs { run: RunFlags::smoke(smoke), resources: Some((1, 3)), ..Default::default() };
        let report = run_reads_benchmark(&ReadsOptions::from_args(&small)?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    timed("peers", &mut || {
        let report = run_peers_benchmark(&PeersOptions::from_args(&PeersArgs {
            run: RunFlags::smoke(smoke),
            ..Default::default()
        })?)?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    // Last: its 256 MiB array would otherwise raise the peak memory the index section reports.
    timed("machine", &mut || {
        let report = run_machine_benchmark(&MachineOptions::from_args(&MachineArgs { run: RunFlags::smoke(smoke) }))?;
        Ok((report.to_markdown(), report.to_json()))
    })?;
    let stolen = machine_bench::stolen_share(ticks, machine_bench::cpu_ticks());

    println!("# kura-bench all{}\n", if smoke { " --smoke" } else { "" });
    for (name, markdown, _) in &sections {
        println!("## {name}\n\n{markdown}");
    }
    println!("## summary\n\n{}", summary_table(&sections));
    match stolen {
        Some(share) => println!("CPU time taken by the hypervisor over the run (steal): {:.1}%\n", share * 100.0),
        None => println!("CPU time taken by the hypervisor over the run (steal): n/a\n"),
    }
    let mut document = serde_json::Map::new();
    document.insert("smoke".into(), smoke.into());
    document.insert("steal_share".into(), stolen.into());
    document.insert("wall_s".into(), started.elapsed().as_secs_f64().into());
    for (name, _, figures) in sections {
        document.insert(name.into(), figures);
    }
    println!("{}", serde_json::to_string(&serde_json::Value::Object(document))?);
    Ok(())
}

/// The headline figures of each section against their targets.
fn summary_table(sections: &[(&str, String, serde_json::Value)]) -> String {
    let find = |name: &str| sections.iter().find(|(n, _, _)| *n == name).map(|(_, _, figures)| figures);
    let number = |figures: Option<&serde_json::Value>, pointer: &str| {
        figures.and_then(|f| f.pointer(pointer)).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN)
    };
    let verdict = |figures: Option<&serde_json::Value>, pointer: &str| match figures
        .and_then(|f| f.pointer(pointer))
        .and_then(serde_json::Value::as_bool)
    {
        Some(true) => "met",
        Some(false) => "missed",
        None => "n/a",
    };
    let (decide, ingest) = (find("decide"), find("ingest"));
    let mut out = String::from("| benchmark | figure | value | target | verdict |\n| --- | --- | --- | --- | --- |\n");
    let mut row = |benchmark: &str, figure: &str, value: String, target: &str, verdict: &str| {
        out.push_str(&format!("| {benchmark} | {figure} | {value} | {target} | {verdict} |\n"));
    };
    for (name, figures) in sections
        .iter()
        .map(|(n, _, f)| (*n, f))
        .filter(|(n, _)| !["decide", "ingest", "reads", "reads-small", "machine"].contains(n))
    {
        row(name, "see the section above", format!("{} figures", figures.as_object().map_or(0, |o| o.len())), "-", "-");
    }
    row(
        "decide",
        "p50 (single call)",
        format!("{:.0} ns", number(decide, "/single_ns_p50")),
        "≤ 2 µs",
        verdict(decide, "/p50_met"),
    );
    row(
        "decide",
        "p99 (single call)",
        format!("{:.0} ns", number(decide, "/single_ns_p99")),
        "≤ 10 µs",
        verdict(decide, "/p99_met"),
    );
    row(
        "ingest",
        "FHIR resources/s, 8 clients",
        format!("{:.0}", number(ingest, "/resources_per_s")),
        "≥ 10,000",
        verdict(ingest, "/target_met"),
    );
    row("ingest", "Kura / plain-SQLite floor", format!("{:.2}", number(ingest, "/kura_over_floor")), "-", "-");
    let machine = find("machine");
    row(
        "machine",
        "CPU: SipHash-1-3 of an integer",
        format!("{:.2} ns", number(machine, "/cpu_siphash13_ns")),
        "-",
        "-",
    );
    row("machine", "memory: random read", format!("{:.1} ns", number(machine, "/memory_random_read_ns")), "-", "-");
    row(
        "machine",
        "disk: durable commit p50 / p99",
        format!(
            "{:.3} / {:.3} ms",
            number(machine, "/durable_commit_ms_p50"),
            number(machine, "/durable_commit_ms_p99")
        ),
        "-",
        "-",
    );
    for (name, records) in [("reads", "160 KB records"), ("reads-small", "6 KB records")] {
        let reads = find(name);
        row(
            name,
            &format!("p50, 1 client, {records}"),
            format!("{:.2} ms", number(reads, "/runs/0/ms_p50")),
            "≤ 0.5 ms",
            verdict(reads, "/p50_met"),
        );
        row(
            name,
            &format!("p99, 1 client, {records}"),
            format!("{:.2} ms", number(reads, "/runs/0/ms_p99")),
            "≤ 2 ms",
            verdict(reads, "/p99_met"),
        );
        row(
            name,
            &format!("req/s, 32 clients, {records}"),
            format!("{:.0}", number(reads, "/runs/1/req_per_s")),
            "≥ 10,000",
            verdict(reads, "/throughput_met"),
        );
    }
    out
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().benchmark {
        Benchmark::Index(args) => {
            let options = IndexOptions::from_args(&args)?;
            let report = run_index_benchmark(&options)?;
            if options.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_markdown());
            }
            Ok(())
        }
        Benchmark::Analysis(args) => {
            let options = AnalysisOptions::from_args(&args)?;
            let report = run_analysis_benchmark(&options)?;
            // The table for people, then the figures on one JSON line for scripts and CI logs.
            if !options.json {
                println!("{}", report.to_markdown());
            }
            println!("{}", serde_json::to_string(&report.to_json())?);
            Ok(())
        }
        Benchmark::Ledger(args) => {
            let options = LedgerOptions::from_args(&args)?;
            let report = run_ledger_benchmark(&options)?;
            print_report(options.json, &report.to_markdown(), &report.to_json())
        }
        Benchmark::Decide(args) => {
            let options = DecideOptions::from_args(&args)?;
            let report = run_decide_benchmark(&options)?;
            print_report(options.json, &report.to_markdown(), &report.to_json())
        }
        Benchmark::Ingest(args) => {
            let options = IngestOptions::from_args(&args)?;
            let report = run_ingest_benchmark(&options)?;
            print_report(options.json, &report.to_markdown(), &report.to_json())
        }
        Benchmark::Reads(args) => {
            let options = ReadsOptions::from_args(&args)?;
            let report = run_reads_benchmark(&options)?;
            print_report(options.json, &report.to_markdown(), &report.to_json())
        }
        Benchmark::Peers(args) => {
            let options = PeersOptions::from_args(&args)?;
            let report = run_peers_benchmark(&options)?;
            print_report(options.json, &report.to_markdown(), &report.to_json())
        }
        Benchmark::Machine(args) => {
            let options = MachineOptions::from_args(&args);
            let report = run_machine_benchmark(&options)?;
            print_report(options.json, &report.to_markdown(), &report.to_json())
        }
        Benchmark::All(args) => run_all(args.smoke),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["kura-bench", "all", "--smoke"]).is_ok());
        assert!(Cli::try_parse_from(["kura-bench", "all", "--fast"]).is_err());
    }
}
