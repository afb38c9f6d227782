//! The removable-media archive format (issue 5), byte for byte as docs/portability-archive.md
//! specifies it: an outer envelope (magic line, JSON header line, XChaCha20-Poly1305 ciphertext
//! under a key derived from the patient's passphrase with argon2id) around a length-prefixed
//! container of named entries, among them `manifest.json` and its Ed25519 signature.
//!
//! Pure functions, no IO: the server's export and import routes and the CLI's offline
//! `kura patient archive verify` share them. Errors never quote content or the passphrase.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kura_api_types::ArchiveManifest;
use serde::{Deserialize, Serialize};

use crate::service::content::sha256_hex;

/// The first line of every archive.
pub const MAGIC: &[u8] = b"KURA-ARCHIVE-1\n";
/// The first line of the decrypted payload (the entry container).
const ENTRIES_MAGIC: &[u8] = b"KURA-ENTRIES-1\n";
/// `format` in the manifest.
pub const MANIFEST_FORMAT: &str = "kura-archive-1";
pub const MANIFEST_ENTRY: &str = "manifest.json";
pub const SIGNATURE_ENTRY: &str = "manifest.sig";
pub const BUNDLE_ENTRY: &str = "bundle.json";

/// argon2id cost for new archives: 19 MiB, 2 passes, 1 lane (the OWASP baseline).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
/// The most an archive may ask of the reader: what Kura itself writes. A crafted header of 80
/// bytes asking for 256 MiB and sixteen passes cost the server 6 s and 256 MiB per request;
/// the parameters are refused before any derivation. Should Kura ever write costlier archives,
/// these rise with the constants above, never past what a server may spend per import.
const MAX_M_COST_KIB: u32 = M_COST_KIB;
const MAX_T_COST: u32 = T_COST;
const MAX_P_COST: u32 = P_COST;
/// The header line is short; a longer one is not ours.
const MAX_HEADER_LEN: usize = 1024;

/// Why an archive does not open or verify. Messages are for the patient; none quotes content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("this is not a Kura archive: {0}")]
    NotAnArchive(&'static str),
    #[error(
        "the passphrase does not open this archive: it is the wrong passphrase, or the archive was damaged or altered"
    )]
    WrongPassphrase,
    #[error("the archive's signature does not verify: it was altered or not made by a Kura server")]
    BadSignature,
    #[error("the archive's entry {0} does not match the hash in its manifest: it was altered")]
    EntryAltered(String),
    #[error("the archive has no entry {0}, which its manifest lists")]
    MissingEntry(String),
    #[error("the archive is malformed: {0}")]
    Malformed(String),
    #[error(
        "the archive asks for a key derivation costlier than Kura writes (at most {} KiB of memory, {} passes, \
         {} lane); it was not opened",
        MAX_M_COST_KIB,
        MAX_T_COST,
        MAX_P_COST
    )]
    TooCostly,
}

impl ArchiveError {
    /// A stable code for the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ArchiveError::NotAnArchive(_) => "not_an_archive",
            ArchiveError::WrongPassphrase => "wrong_passphrase",
            ArchiveError::BadSignature => "bad_signature",
            ArchiveError::EntryAltered(_) => "entry_altered",
            ArchiveError::MissingEntry(_) => "entry_missing",
            ArchiveError::Malformed(_) => "archive_malformed",
            ArchiveError::TooCostly => "archive_too_costly",
        }
    }
}

/// The hex SHA-256 the manifest lists for an entry's data.
pub fn entry_sha256(data: &[u8]) -> String {
    sha256_hex(data)
}

/// One named entry of an archive. No `Debug` of the data: it is health data.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).field("len", &self.data.len()).finish()
    }
}

/// The JSON header line: how the key is derived and the nonce of the ciphertext.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    /// base64 (standard, padded), 16 bytes.
    salt: String,
    cipher: String,
    /// base64 (standard, padded), 24 bytes.
    nonce: String,
}

fn random<const N: usize>() -> Result<[u8; N], ArchiveError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| ArchiveError::Malformed("the system random generator failed".into()))?;
    Ok(bytes)
}

fn derive_key(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<[u8; 32], ArchiveError> {
    let params = Params::new(m, t, p, Some(32))
        .map_err(|_| ArchiveError::Malformed("its key-derivation parameters are not valid".into()))?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|_| ArchiveError::Malformed("its key-derivation parameters are not valid".into()))?;
    Ok(key)
}

/// Whether `name` is an entry name this format allows: 1 to 255 bytes of ASCII letters, digits,
/// `.`, `_`, `-` and `/`, with no empty, `.` or `..` segment (so that no entry can name a path
/// outside a folder it is unpacked into).
pub fn is_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && name.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// The entry container: `KURA-ENTRIES-1\n`, then per entry a big-endian u16 name length, the
/// name, a big-endian u64 data length and the data.
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let total: usize = entries.iter().map(|e| 10 + e.name.len() + e.data.len()).sum();
    let mut out = Vec::with_capacity(ENTRIES_MAGIC.len() + total);
    out.extend_from_slice(ENTRIES_MAGIC);
    for entry in entries {
        let name_len = u16::try_from(entry.name.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(&entry.name.as_bytes()[..usize::from(name_len)]);
        out.extend_from_slice(&(entry.data.len() as u64).to_be_bytes());
        out.extend_from_slice(&entry.data);
    }
    out
}

/// Reads the entry container; every length is checked against what remains, names must be
/// valid and distinct, and nothing may follow the last entry.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<Entry>, ArchiveError> {
    let malformed = |what: &str| ArchiveError::Malformed(what.to_owned());
    let mut rest = bytes.strip_prefix(ENTRIES_MAGIC).ok_or_else(|| malformed("its content is not an entry list"))?;
    let mut entries: Vec<Entry> = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or_else(|| malformed("an entry is cut short"))?;
        let name_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (name, tail) = tail.split_at_checked(name_len).ok_or_else(|| malformed("an entry name is cut short"))?;
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| is_entry_name(n))
            .ok_or_else(|| malformed("an entry has a name this format does not allow"))?;
        let (len, tail) = tail.split_at_checked(8).ok_or_else(|| malformed("an entry is cut short"))?;
        let data_len = u64::from_be_bytes(len.try_into().map_err(|_| malformed("an entry is cut short"))?);
        let data_len = usize::try_from(data_len).map_err(|_| malformed("an entry is longer than the archive"))?;
        let (data, tail) =
            tail.split_at_checked(data_len).ok_or_else(|| malformed("an entry is longer than the archive"))?;
        if entries.iter().any(|e| e.name == name) {
            return Err(ArchiveError::Malformed(format!("the entry {name} appears twice")));
        }
        entries.push(Entry { name: name.to_owned(), data: data.to_vec() });
        rest = tail;
    }
    Ok(entries)
}

/// Encrypts `entries` to `passphrase`: the whole archive file.
pub fn seal(entries: &[Entry], passphrase: &str) -> Result<Vec<u8>, ArchiveError> {
    let salt: [u8; 16] = random()?;
    let nonce: [u8; 24] = random()?;
    let header = Header {
        kdf: "argon2id".into(),
        m_cost_kib: M_COST_KIB,
        t_cost: T_COST,
        p_cost: P_COST,
        salt: STANDARD.encode(salt),
        cipher: "xchacha20poly1305".into(),
        nonce: STANDARD.encode(nonce),
    };
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(
        &serde_json::to_vec(&header).map_err(|_| ArchiveError::Malformed("its header does not encode".into()))?,
    );
    head.push(b'\n');
    let key = derive_key(passphrase, &salt, M_COST_KIB, T_COST, P_COST)?;
    let cipher = XChaCha20Poly1305::new(&key.into());
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: &encode_entries(entries), aad: &head })
        .map_err(|_| ArchiveError::Malformed("it cannot be encrypted".into()))?;
    head.extend_from_slice(&ciphertext);
    Ok(head)
}

/// Decrypts an archive file with `passphrase` and reads its entries. Signature and hashes are
/// checked by [`verify`].
pub fn open(bytes: &[u8], passphrase: &str) -> Result<Vec<Entry>, ArchiveError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(ArchiveError::NotAnArchive("it does not start with KURA-ARCHIVE-1"))?;
    let header_len = rest
        .iter()
        .take(MAX_HEADER_LEN)
        .position(|b| *b == b'\n')
        .ok_or(ArchiveError::NotAnArchive("its header line is missing"))?;
    let header: Header = serde_json::from_slice(&rest[..header_len])
        .map_err(|_| ArchiveError::NotAnArchive("its header line is not the expected JSON"))?;
    if header.kdf != "argon2id" || header.cipher != "xchacha20poly1305" {
        return Err(ArchiveError::Malformed("it uses a key derivation or cipher this version does not know".into()));
    }
    if header.m_cost_kib > MAX_M_COST_KIB || header.t_cost > MAX_T_COST || header.p_cost > MAX_P_COST {
        return Err(ArchiveError::TooCostly);
    }
    let salt = STANDARD.decode(&header.salt).ok().filter(|s| (8..=64).contains(&s.len()));
    let nonce = STANDARD.decode(&header.nonce).ok().filter(|n| n.len() == 24);
    let (Some(salt), Some(nonce)) = (salt, nonce) else {
        return Err(ArchiveError::Malformed("its header's salt or nonce is not valid".into()));
    };
    let head_len = MAGIC.len() + header_len + 1;
    let (head, ciphertext) = bytes.split_at(head_len);
    let key = derive_key(passphrase, &salt, header.m_cost_kib, header.t_cost, header.p_cost)?;
    let cipher = XChaCha20Poly1305::new(&key.into());
    let payload = cipher
        .decrypt(XNonce::from_slice(&nonce), Payload { msg: ciphertext, aad: head })
        .map_err(|_| ArchiveError::WrongPassphrase)?;
    decode_entries(&payload)
}

/// The signed manifest of a complete, unaltered archive, and its entries.
pub struct Verified {
    pub manifest: ArchiveManifest,
    /// SHA-256 (hex) of the `manifest.json` bytes: the archive's identity.
    pub manifest_sha256: String,
    pub entries: Vec<Entry>,
}

impl Verified {
    /// The data of the entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&[u8]> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.data.as_slice())
    }
}

fn find<'a>(entries: &'a [Entry], name: &str) -> Result<&'a [u8], ArchiveError> {
    entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.data.as_slice())
        .ok_or_else(|| ArchiveError::MissingEntry(name.to_owned()))
}

/// Checks the manifest's signature against the key the manifest names, then every entry the
/// manifest lists against its SHA-256. The signature proves the archive is unaltered since a
/// server holding that key made it; whose key it is, the reader checks against the server's
/// published key (`GET /api/v1/server`).
pub fn verify(entries: Vec<Entry>) -> Result<Verified, ArchiveError> {
    let manifest_bytes = find(&entries, MANIFEST_ENTRY)?;
    let signature = find(&entries, SIGNATURE_ENTRY)?;
    let signature = std::str::from_utf8(signature).map_err(|_| ArchiveError::BadSignature)?;
    // The key is read before the manifest is trusted only to check the signature with it.
    #[derive(Deserialize)]
    struct Signer {
        server: SignerKey,
    }
    #[derive(Deserialize)]
    struct SignerKey {
        public_key: String,
    }
    let signer: Signer = serde_json::from_slice(manifest_bytes).map_err(|_| ArchiveError::BadSignature)?;
    if !crate::identity::verify(&signer.server.public_key, manifest_bytes, signature.trim()) {
        return Err(ArchiveError::BadSignature);
    }
    let manifest: ArchiveManifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| ArchiveError::Malformed(format!("its manifest is not valid: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(ArchiveError::Malformed(format!(
            "its manifest's format is {}, not {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    let manifest_sha256 = sha256_hex(manifest_bytes);
    let listed = std::iter::once((&manifest.bundle.entry, &manifest.bundle.sha256))
        .chain(manifest.records.iter().map(|r| (&r.entry, &r.content_sha256)));
    for (name, expected) in listed {
        if sha256_hex(find(&entries, name)?) != *expected {
            return Err(ArchiveError::EntryAltered(name.clone()));
        }
    }
    Ok(Verified { manifest, manifest_sha256, entries })
}

/// A part category as archive manifests (and the API) name it.
pub(crate) fn category_to_api(c: kura_core::record::PartCategory) -> kura_api_types::Category {
    match c {
        kura_core::record::PartCategory::Certificate => kura_api_types::Category::Certificate,
        kura_core::record::PartCategory::Image => kura_api_types::Category::Image,
        kura_core::record::PartCategory::Medication => kura_api_types::Category::Medication,
        kura_core::record::PartCategory::Observation => kura_api_types::Category::Observation,
        kura_core::record::PartCategory::Condition => kura_api_types::Category::Condition,
        kura_core::record::PartCategory::Procedure => kura_api_types::Category::Procedure,
        kura_core::record::PartCategory::Document => kura_api_types::Category::Document,
        kura_core::record::PartCategory::PatientEntered => kura_api_types::Category::PatientEntered,
        kura_core::record::PartCategory::Other => kura_api_types::Category::Other,
    }
}

pub(crate) fn category_from_api(c: kura_api_types::Category) -> kura_core::record::PartCategory {
    match c {
        kura_api_types::Category::Certificate => kura_core::record::PartCategory::Certificate,
        kura_api_types::Category::Image => kura_core::record::PartCategory::Image,
        kura_api_types::Category::Medication => kura_core::record::PartCategory::Medication,
        kura_api_types::Category::Observation => kura_core::record::PartCategory::Observation,
        kura_api_types::Category::Condition => kura_core::record::PartCategory::Condition,
        kura_api_types::Category::Procedure => kura_core::record::PartCategory::Procedure,
        kura_api_types::Category::Document => kura_core::record::PartCategory::Document,
        kura_api_types::Category::PatientEntered => kura_core::record::PartCategory::PatientEntered,
        kura_api_types::Category::Other => kura_core::record::PartCategory::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Entry {
        Entry { name: name.into(), data: data.to_vec() }
    }

    #[test]
    fn entries_round_trip_and_refuse_bad_containers() {
        let entries = vec![entry("bundle.json", b"{}"), entry("records/a.dcm", &[0, 1, 2]), entry("empty", b"")];
        let encoded = encode_entries(&entries);
        assert_eq!(decode_entries(&encoded).unwrap(), entries);
        for cut in 1..encoded.len() - ENTRIES_MAGIC.len() {
            // Every truncation that is not at an entry boundary is refused, never a panic.
            let _ = decode_entries(&encoded[..encoded.len() - cut]);
        }
        assert!(decode_entries(b"nope").is_err());
        let twice = encode_entries(&[entry("a", b"1"), entry("a", b"2")]);
        assert_eq!(decode_entries(&twice), Err(ArchiveError::Malformed("the entry a appears twice".into())));
    }

    #[test]
    fn entry_names_cannot_escape_a_folder() {
        for (name, ok) in [
            ("records/x.dcm", true),
            ("manifest.json", true),
            ("../x", false),
            ("/etc/passwd", false),
            ("a//b", false),
            ("a/./b", false),
            ("", false),
            ("space name", false),
        ] {
            assert_eq!(is_entry_name(name), ok, "{name}");
        }
    }

    #[test]
    fn sealed_archives_open_only_with_their_passphrase_and_unaltered() {
        let entries = vec![entry("a.txt", b"hello")];
        let sealed = seal(&entries, "correct horse battery").unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert_eq!(open(&sealed, "correct horse battery").unwrap(), entries);
        assert_eq!(open(&sealed, "wrong horse battery"), Err(ArchiveError::WrongPassphrase));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(open(&flipped, "correct horse battery"), Err(ArchiveError::WrongPassphrase));
        assert!(matches!(open(b"PK\x03\x04", "x"), Err(ArchiveError::NotAnArchive(_))));
        // A header asking more than Kura writes is refused before any derivation.
        for (m, t, p) in [(M_COST_KIB + 1, T_COST, P_COST), (M_COST_KIB, T_COST + 1, P_COST), (8, 1, P_COST + 1)] {
            let header = format!(
                r#"{{"kdf":"argon2id","m_cost_kib":{m},"t_cost":{t},"p_cost":{p},"salt":"AAAAAAAAAAAAAAAAAAAAAA==","cipher":"xchacha20poly1305","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#
            );
            let crafted = [MAGIC, header.as_bytes(), b"\n", &[0u8; 32]].concat();
            assert_eq!(open(&crafted, "correct horse battery"), Err(ArchiveError::TooCostly), "{m} {t} {p}");
        }
        assert!(matches!(open(MAGIC, "x"), Err(ArchiveError::NotAnArchive(_))));
    }
}
