//! `kura serve` reads its settings through the one loader: a malformed value, from the
//! environment or the file, stops it before it opens anything, with an error naming the setting.

use std::process::Command;

fn serve(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kura"));
    command.arg("serve").arg("--data-dir").arg(dir.join("data")).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run kura serve");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_malformed_setting_stops_the_server_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = serve(dir.path(), &[], &[("KURA_DISCLOSURE_K", "ten")]);
    assert!(!ok);
    assert!(stderr.contains("disclosure_k") && stderr.contains("KURA_DISCLOSURE_K"), "{stderr}");

    let file = dir.path().join("kura.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nsesion_minutes = 10\n").unwrap();
    let (ok, stderr) = serve(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(stderr.contains("sesion_minutes"), "a typo in the file is named: {stderr}");

    std::fs::write(&file, "public_url = \"ftp://x\"\n").unwrap();
    let (ok, stderr) = serve(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(stderr.contains("public_url") && stderr.contains("kura.toml"), "{stderr}");
    // Nothing was created for a configuration that was refused.
    assert!(!dir.path().join("data").exists());
}
