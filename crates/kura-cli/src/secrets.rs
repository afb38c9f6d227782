//! Passwords and tokens as the CLI handles them: a wrapper that keeps them out of `Debug`
//! output, generation of random passwords, and reading a password from stdin or the terminal.
//!
//! Nothing here prints a secret; the callers that deliberately show a generated password (the
//! demo's account listing, `operator bootstrap`, `register` and `account create` without
//! `--password-stdin`) do so themselves, on stdout, once.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{Context, Result, bail};

/// A password or a bearer token. Its `Debug` shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send or show it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of generated passwords: 16 alphanumeric characters carry about 95 bits.
pub const GENERATED_PASSWORD_LEN: usize = 16;

/// A random password of [`GENERATED_PASSWORD_LEN`] letters and digits from the OS generator.
pub fn generate_password() -> Result<Secret> {
    Ok(Secret(random_alphanumeric(GENERATED_PASSWORD_LEN)?))
}

/// `len` letters and digits, uniformly distributed: bytes at or above the largest multiple of
/// 62 below 256 are drawn again rather than folded in, which would favour some characters.
pub fn random_alphanumeric(len: usize) -> Result<String> {
    let limit = 256 - (256 % ALPHANUMERIC.len());
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the system random generator failed: {e}"))?;
        for b in bytes {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(ALPHANUMERIC[usize::from(b) % ALPHANUMERIC.len()]));
            }
        }
    }
    Ok(out)
}

/// Reads a password from all of stdin (`--password-stdin`), without its final line break.
pub fn read_password_stdin() -> Result<Secret> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read the password from stdin")?;
    password_from_text(&text)
}

fn password_from_text(text: &str) -> Result<Secret> {
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
    if password.is_empty() {
        bail!("no password on stdin");
    }
    Ok(Secret(password.to_owned()))
}

/// Asks for a password on stderr and reads one line from stdin. On a terminal the typed
/// characters are hidden (with `stty -echo`) when that is possible.
pub fn prompt_password(prompt: &str) -> Result<Secret> {
    let stdin = std::io::stdin();
    let on_terminal = stdin.is_terminal();
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let echo_hidden = on_terminal && set_terminal_echo(false);
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if echo_hidden {
        set_terminal_echo(true);
        eprintln!();
    }
    read.context("cannot read the password")?;
    password_from_text(&line)
}

/// Turns terminal echo on or off through `stty`; false when that did not work.
fn set_terminal_echo(on: bool) -> bool {
    std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_sixteen_letters_and_digits_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        for p in [&a, &b] {
            assert_eq!(p.expose().len(), GENERATED_PASSWORD_LEN);
            assert!(p.expose().chars().all(|c| c.is_ascii_alphanumeric()), "{}", p.expose());
        }
        assert_ne!(a, b);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("hunter2hunter2");
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn password_text_loses_only_its_final_line_break() {
        let check = |input: &str, expected: Option<&str>| {
            let got = password_from_text(input).ok().map(|s| s.expose().to_owned());
            assert_eq!(got.as_deref(), expected, "input {input:?}");
        };
        check("secret-pass\n", Some("secret-pass"));
        check("secret-pass\r\n", Some("secret-pass"));
        check("secret-pass", Some("secret-pass"));
        check(" spaced pass \n", Some(" spaced pass "));
        check("\n", None);
        check("", None);
    }
}
