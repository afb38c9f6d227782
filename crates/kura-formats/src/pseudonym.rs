//! Keyed pseudonyms: HMAC-SHA256 of a value under a context key, written in a short base32.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl Pseudonymizer {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, kind: &str, value: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// `<prefix>-<8 characters>`, the same for the same value and key.
    pub fn name(&self, prefix: &str, value: &str) -> String {
        let code: String =
            self.mac(prefix, value).iter().take(8).map(|b| ALPHABET[usize::from(b % 32)] as char).collect();
        format!("{prefix}-{code}")
    }

    /// A 32-hex-digit token (for ids and references).
    pub fn token(&self, kind: &str, value: &str) -> String {
        self.mac(kind, value).iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}
