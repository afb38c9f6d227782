//! `kura logout`: forget the saved session.

use std::process::ExitCode;

use anyhow::Result;

use crate::session;

pub fn run() -> Result<ExitCode> {
    let path = session::default_path()?;
    if session::remove(&path)? {
        println!("logged out (removed {})", path.display());
    } else {
        println!("no session to forget at {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
