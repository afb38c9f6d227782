//! The CLI as a Unix tool: a reader that goes away (`kura … | head`) ends it quietly with status
//! 0 instead of a panic, and `kura completions` prints scripts generated from the real commands.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn kura() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kura"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/synthea-r4").join(name)
}

/// Runs `command` with standard output a pipe whose reading end is already closed, so the first
/// write fails with EPIPE whatever the timing.
fn run_into_closed_pipe(mut command: Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    command.stdout(writer).stderr(Stdio::piped()).output().expect("run kura")
}

fn assert_quiet_success(output: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what}: status {:?}, stderr: {stderr}", output.status);
    assert!(stderr.is_empty(), "{what}: nothing on stderr, got: {stderr}");
}

#[test]
fn a_closed_pipe_ends_printing_commands_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let anonymized = dir.path().join("anonymized.json");
    let made = kura()
        .args(["deid", "--context", "pipes", "--out"])
        .arg(&anonymized)
        .arg(fixture("patient-01.json"))
        .output()
        .expect("run kura deid");
    assert!(made.status.success(), "deid: {}", String::from_utf8_lossy(&made.stderr));

    // The same command into a live pipe prints its verdict and succeeds: the control case.
    let check = kura().args(["deid", "check"]).arg(&anonymized).output().expect("run kura deid check");
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("no residual identifiers"));

    // println! into a closed pipe.
    let mut command = kura();
    command.args(["deid", "check"]).arg(&anonymized);
    assert_quiet_success(&run_into_closed_pipe(command), "deid check | (closed)");

    // write_all into a closed pipe, reported as an error inside the command.
    let mut command = kura();
    command.args(["deid", "--context", "pipes"]).arg(fixture("patient-01.json"));
    assert_quiet_success(&run_into_closed_pipe(command), "deid | (closed)");

    let mut command = kura();
    command.args(["completions", "bash"]);
    assert_quiet_success(&run_into_closed_pipe(command), "completions bash | (closed)");
}

#[test]
fn completions_cover_the_real_commands_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = kura().args(["completions", shell]).output().expect("run kura completions");
        assert!(output.status.success(), "{shell}: {}", String::from_utf8_lossy(&output.stderr));
        let script = String::from_utf8_lossy(&output.stdout);
        for word in ["records", "grant", "sealed-copy", "server"] {
            assert!(script.contains(word), "{shell} completion mentions {word}");
        }
    }
    let unknown = kura().args(["completions", "tcsh"]).output().expect("run kura completions");
    assert!(!unknown.status.success(), "an unknown shell is refused");
}
