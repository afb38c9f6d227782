//! Keyed pseudonyms: HMAC-SHA256 of a value under a context key.
//!
//! The same value under the same key always gives the same pseudonym, so references stay
//! consistent inside a record and across the records released in one context; under another key
//! the pseudonyms cannot be linked to the first ones without the keys.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::FormatError;

/// Keys shorter than this could be brute-forced from known name/pseudonym pairs.
pub const MIN_KEY_BYTES: usize = 16;

/// Base32 without the look-alikes `I`, `O`, `0` and `1`; 32 symbols so that every byte maps
/// uniformly.
const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A keyed pseudonym generator. It has no `Debug`: it holds the key.
pub struct Pseudonymizer {
    keyed: Hmac<Sha256>,
}

impl Pseudonymizer {
    pub fn new(key: &[u8]) -> Result<Self, FormatError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(FormatError::KeyTooShort);
        }
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| FormatError::KeyTooShort)?;
        Ok(Self { keyed })
    }

    /// The MAC of `value` in the domain `kind`, so that equal values of different kinds (an
    /// identifier and a name, say) get unrelated pseudonyms.
    fn mac(&self, kind: &str, value: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// `<prefix>-<8 base32 characters>` (40 bits), e.g. `Practitioner-3KX9QF2A`.
    pub fn name(&self, prefix: &str, value: &str) -> String {
        let code: String =
            self.mac(prefix, value).iter().take(8).map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect();
        format!("{prefix}-{code}")
    }

    /// How many days a patient's dates move in this context: 1 to 365 either way, never zero, so
    /// that intervals survive and the dates themselves do not.
    pub fn shift_days(&self, patient: &str) -> i64 {
        let mac = self.mac("date-shift", patient);
        let days = 1 + i64::from(u16::from_be_bytes([mac[0], mac[1]]) % 365);
        if mac[2] & 1 == 0 { days } else { -days }
    }

    /// 32 lower-case hex digits (128 bits): a valid FHIR id and UUID-free identifier value.
    pub fn token(&self, kind: &str, value: &str) -> String {
        self.mac(kind, value).iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef";
    const OTHER_KEY: &[u8] = b"fedcba9876543210";

    #[test]
    fn keys_must_be_long_enough() {
        let check = |key: &[u8], ok: bool| assert_eq!(Pseudonymizer::new(key).is_ok(), ok, "{} bytes", key.len());
        check(b"", false);
        check(b"fifteen bytes!!", false);
        check(KEY, true);
        check(&[7; 64], true);
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_across_keys_and_kinds() {
        let keyed = Pseudonymizer::new(KEY).unwrap();
        let other = Pseudonymizer::new(OTHER_KEY).unwrap();
        let name = keyed.name("Practitioner", "dr. jane doe");
        assert!(name.starts_with("Practitioner-") && name.len() == "Practitioner-".len() + 8, "{name}");
        assert!(name.trim_start_matches("Practitioner-").bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(keyed.name("Practitioner", "dr. jane doe"), name);
        assert_ne!(other.name("Practitioner", "dr. jane doe"), name);
        assert_ne!(keyed.name("Practitioner", "dr. john doe"), name);
        let token = keyed.token("patient", "42");
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(keyed.token("identifier", "42"), token);
        assert_ne!(other.token("patient", "42"), token);
    }
}
