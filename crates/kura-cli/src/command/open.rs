//! `kura open`: opens a sealed copy's package, fetching its key from the server that sealed it
//! and keeping the key in memory only.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use kura_api_types as api;
use kura_store::package::{Package, PackageKey};
use reqwest::Url;

use super::{Connection, connect};
use crate::client::{Client, decode};

#[derive(Debug, Args)]
#[command(after_help = "The key is fetched from the server you are connected to (--server, KURA_SERVER or \
    your session), which must be the one the package names: a package naming another server is \
    refused and nothing is sent. The key is kept in memory only and never written to disk.")]
pub struct OpenArgs {
    #[command(flatten)]
    conn: Connection,
    /// The package file (`.kura-sealed`).
    package: PathBuf,
    /// Write the opened content here (created readable by you only) [default: stdout, FHIR only].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Opens a sealed copy's package with a key fetched from `client`'s server, which must be the
/// origin of the package's key URL: a package is a file anyone can craft, and its key URL must
/// not decide where the caller's token goes. On another origin nothing is sent. The key never
/// leaves this function's memory.
pub async fn open_package(client: &Client, bytes: &[u8]) -> Result<Vec<u8>> {
    let package = Package::parse(bytes)?;
    let key_url = key_url(&package)?;
    if !client.is_same_origin(&key_url) {
        bail!(
            "the package's key is on {}, not on {}, the server you are connected to; nothing was sent. \
             If you trust that server, log in there and open the package with --server {}",
            key_url.origin().ascii_serialization(),
            client.server(),
            key_url.origin().ascii_serialization(),
        );
    }
    let id = package.field("sealed-copy").context("the package names no sealed copy")?;
    let answer: api::SealedCopyKey = decode(client.post_empty(&["api", "v1", "sealed-copies", id, "key"]).await?)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(answer.key.trim())
        .context("the server sent a key that is not base64url")?;
    let key = PackageKey::from_bytes(&raw).context("the server sent a key of the wrong length")?;
    Ok(package.open(&key)?)
}

/// The package's `key-url`, which must be an http:// or https:// URL with a host.
fn key_url(package: &Package<'_>) -> Result<Url> {
    let raw = package.field("key-url").context("the package names no key URL")?;
    let url = Url::parse(raw).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
    let Some(url) = url else {
        bail!("the package's key URL is not an http:// or https:// URL");
    };
    if url.host_str().is_none_or(str::is_empty) {
        bail!("the package's key URL has no host");
    }
    Ok(url)
}

pub async fn run(args: OpenArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.package).with_context(|| format!("cannot read {}", args.package.display()))?;
    let package = Package::parse(&bytes)?;
    // The server is the one configured (--server, KURA_SERVER or the session), never the one the
    // package names: `open_package` refuses a package whose key lives elsewhere.
    let client = connect(&args.conn, None)?;
    let content = open_package(&client, &bytes).await?;
    match &args.out {
        Some(path) => {
            write_private(path, &content)?;
            eprintln!(
                "opened sealed copy {} ({} bytes) into {}; it opens until {}",
                package.field("sealed-copy").unwrap_or("?"),
                content.len(),
                path.display(),
                package.field("expires-at").unwrap_or("the grant ends")
            );
        }
        None if std::io::stdout().is_terminal() && package.field("format") != Some("fhir") => {
            bail!("this copy holds binary content; write it to a file with --out FILE")
        }
        None => std::io::stdout().write_all(&content).context("cannot write to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a new file readable by its owner only: opened content is health data.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_urls_must_be_http_with_a_host() {
        let check = |raw: &str, expected: Result<&str, &str>| {
            let (bytes, _) = kura_store::package::seal(&[("key-url", raw)], b"x").unwrap();
            let package = Package::parse(&bytes).unwrap();
            match (key_url(&package), expected) {
                (Ok(url), Ok(want)) => assert_eq!(url.origin().ascii_serialization(), want),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        };
        check("http://127.0.0.1:8080/api/v1/sealed-copies/p1/key", Ok("http://127.0.0.1:8080"));
        check("https://kura.example.org/api/v1/sealed-copies/p1/key", Ok("https://kura.example.org"));
        check("file:///etc/passwd", Err("not an http"));
        // The URL standard reads the first path segment as the host; the origin is what counts.
        check("http:///no-host", Ok("http://no-host"));
        check("http://", Err("not an http"));
    }

    /// A loopback listener that records the head of every request it gets and answers 404.
    async fn listener() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                let mut buffer = vec![0u8; 8192];
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer)).await;
                let read = read.ok().and_then(Result::ok).unwrap_or(0);
                seen.lock().unwrap().push(String::from_utf8_lossy(&buffer[..read]).to_lowercase());
                let answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = stream.write_all(answer).await;
            }
        });
        (port, heads)
    }

    #[tokio::test]
    async fn the_token_goes_only_to_the_configured_servers_origin() {
        let (server_port, server_heads) = listener().await;
        let (other_port, other_heads) = listener().await;
        let token = crate::secrets::Secret::new("the-callers-bearer-token");
        let client = Client::new(&format!("http://127.0.0.1:{server_port}"), Some(token)).unwrap();
        let package = |key_url: String| {
            let fields = [("sealed-copy", "p1"), ("key-url", key_url.as_str())];
            kura_store::package::seal(&fields, b"x").unwrap().0
        };

        // Crafted packages that name another origin: another port, another spelling of the
        // host, another scheme. Nothing is sent anywhere.
        for key_url in [
            format!("http://127.0.0.1:{other_port}/api/v1/sealed-copies/p1/key"),
            format!("http://localhost:{server_port}/api/v1/sealed-copies/p1/key"),
            format!("https://127.0.0.1:{server_port}/api/v1/sealed-copies/p1/key"),
        ] {
            let refused = open_package(&client, &package(key_url.clone())).await.unwrap_err().to_string();
            assert!(refused.contains("nothing was sent"), "{key_url}: {refused}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(other_heads.lock().unwrap().is_empty(), "the other origin was not contacted");
        assert!(server_heads.lock().unwrap().is_empty(), "nothing was sent to the server either");

        // A package of the configured server fetches its key there, with the token.
        let own = package(format!("http://127.0.0.1:{server_port}/api/v1/sealed-copies/p1/key"));
        let failed = open_package(&client, &own).await.unwrap_err().to_string();
        assert!(!failed.contains("nothing was sent"), "{failed}");
        let heads = server_heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(heads[0].contains("authorization: bearer the-callers-bearer-token"), "{heads:?}");
        assert!(other_heads.lock().unwrap().is_empty());
    }
}
