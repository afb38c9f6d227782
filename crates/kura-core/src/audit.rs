//! The audit chain: each entry's hash covers the previous entry's hash and the entry's own
//! fields, so that an edited, removed or reordered entry breaks the chain (DESIGN.md, I7).

use sha2::{Digest, Sha256};

/// The hash before the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The fields of an audit entry that the chain covers. Texts are ids and short codes, never
/// record content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFields {
    pub seq: i64,
    pub at_millis: i64,
    pub actor: String,
    pub on_behalf_of: String,
    pub action: String,
    pub record: String,
    pub grant: String,
    pub outcome: String,
    pub detail: String,
    /// The patient the entry is about (`account:<id>`), or empty: what a patient's audit view selects by.
    pub subject: String,
}

/// `sha256(prev || len-prefixed fields)`.
pub fn entry_hash(prev: &[u8; 32], fields: &AuditFields) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(fields.seq.to_be_bytes());
    hasher.update(fields.at_millis.to_be_bytes());
    for text in [
        &fields.actor,
        &fields.on_behalf_of,
        &fields.action,
        &fields.record,
        &fields.grant,
        &fields.outcome,
        &fields.detail,
        &fields.subject,
    ] {
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

/// Where and why a chain stopped verifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number at which the chain breaks (the first entry that does not follow).
    pub seq: i64,
    pub reason: &'static str,
}

/// Walks the entries in storage order, each with its stored previous and own hash, and checks
/// that sequence numbers run without gaps from 1 and that every hash recomputes.
pub struct ChainVerifier {
    expected_seq: i64,
    prev: [u8; 32],
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev: GENESIS_HASH }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, fields: &AuditFields, stored_prev: &[u8], stored_hash: &[u8]) -> Result<(), ChainBreak> {
        if fields.seq != self.expected_seq {
            return Err(ChainBreak { seq: self.expected_seq, reason: "an entry is missing or out of order" });
        }
        if stored_prev != self.prev {
            return Err(ChainBreak { seq: fields.seq, reason: "the entry does not follow the one before it" });
        }
        let hash = entry_hash(&self.prev, fields);
        if stored_hash != hash {
            return Err(ChainBreak { seq: fields.seq, reason: "the entry was changed after it was written" });
        }
        self.prev = hash;
        self.expected_seq += 1;
        Ok(())
    }

    /// The last hash verified, to compare with the stored head.
    pub fn head(&self) -> ([u8; 32], i64) {
        (self.prev, self.expected_seq - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, detail: &str) -> AuditFields {
        AuditFields {
            seq,
            at_millis: 1_000 * seq,
            actor: "account:a".into(),
            on_behalf_of: String::new(),
            action: "view".into(),
            record: "r1".into(),
            grant: String::new(),
            outcome: "allowed".into(),
            detail: detail.into(),
            subject: String::new(),
        }
    }

    fn chain(n: i64) -> Vec<(AuditFields, [u8; 32], [u8; 32])> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let fields = entry(seq, "x");
                let hash = entry_hash(&prev, &fields);
                let row = (fields, prev, hash);
                prev = hash;
                row
            })
            .collect()
    }

    fn verify(rows: &[(AuditFields, [u8; 32], [u8; 32])]) -> Result<(), ChainBreak> {
        let mut v = ChainVerifier::default();
        rows.iter().try_for_each(|(f, p, h)| v.push(f, p, h))
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(()));
    }

    #[test]
    fn edited_removed_and_reordered_entries_are_found() {
        let mut edited = chain(5);
        edited[2].0.detail = "y".into();
        assert_eq!(verify(&edited).unwrap_err().seq, 3);

        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(verify(&removed).unwrap_err().seq, 2);

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(verify(&reordered).unwrap_err().seq, 2);

        // Renumbering after a removal still breaks the link between neighbours.
        let mut renumbered = chain(5);
        renumbered.remove(1);
        for (i, row) in renumbered.iter_mut().enumerate() {
            row.0.seq = i as i64 + 1;
        }
        assert_eq!(verify(&renumbered).unwrap_err().seq, 2);
    }
}
