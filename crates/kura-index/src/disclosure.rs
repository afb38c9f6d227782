//! Disclosure control for research search (DESIGN.md, I5): subjects appear to a study only as
//! handles that are unlinkable across studies, and counts below the threshold `k` reveal nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The handle a study sees for a subject: HMAC-SHA256 under the server's study key over the
/// study id and the subject, as 32 hex characters (128 bits). The same subject has the same
/// handle throughout one study and unrelated handles in different studies, so two studies cannot
/// join their results, and nobody without the key can go from a handle back to a subject.
pub fn handle(study_key: &[u8], study_id: &str, subject: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(study_key).expect("HMAC takes keys of any length");
    // The study id is length-prefixed so that no (study, subject) pair can be re-split into
    // another pair with the same bytes.
    mac.update(&(study_id.len() as u64).to_be_bytes());
    mac.update(study_id.as_bytes());
    mac.update(subject.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..16].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What a research search may reveal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disclosed {
    /// The cohort has at least `k` subjects: its size and their handles.
    Count { count: u64, handles: Vec<String> },
    /// The cohort has fewer than `k` subjects; neither how many nor who.
    FewerThan { k: u64 },
}

/// Applies the threshold: a count below `k` reveals neither the count nor any handle, and the
/// handles are only computed when they may be shown.
pub fn disclose(count: u64, k: u64, handles: impl FnOnce() -> Vec<String>) -> Disclosed {
    if count < k { Disclosed::FewerThan { k } } else { Disclosed::Count { count, handles: handles() } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_stable_within_a_study_and_unlinkable_across() {
        let key = b"server study key";
        let first = handle(key, "study-1", "account:alice");
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
        assert_eq!(first, handle(key, "study-1", "account:alice"));
        assert_ne!(first, handle(key, "study-2", "account:alice"));
        assert_ne!(first, handle(key, "study-1", "account:bob"));
        assert_ne!(first, handle(b"another server", "study-1", "account:alice"));
        // Moving bytes between the study id and the subject gives another handle.
        assert_ne!(handle(key, "ab", "c"), handle(key, "a", "bc"));
    }

    #[test]
    fn handles_do_not_change_between_versions() {
        // Computed independently (Python's hmac module); a study's handles must stay the same
        // across server upgrades, or researchers' requests would stop reaching their subjects.
        assert_eq!(handle(b"server study key", "study-1", "account:alice"), "27f84c52973320399537e1be3437e075");
    }

    #[test]
    fn small_counts_reveal_nothing() {
        let check = |count: u64, k: u64, expected: Disclosed| {
            let handles = || (0..count).map(|n| format!("h{n}")).collect();
            assert_eq!(disclose(count, k, handles), expected, "{count} with k = {k}");
        };
        check(0, 10, Disclosed::FewerThan { k: 10 });
        check(9, 10, Disclosed::FewerThan { k: 10 });
        check(1, 1, Disclosed::Count { count: 1, handles: vec!["h0".to_owned()] });
        check(0, 0, Disclosed::Count { count: 0, handles: Vec::new() });
        let ten: Vec<String> = (0..10).map(|n| format!("h{n}")).collect();
        check(10, 10, Disclosed::Count { count: 10, handles: ten });
    }

    #[test]
    fn suppressed_searches_never_compute_handles() {
        let mut computed = false;
        let disclosed = disclose(3, 10, || {
            computed = true;
            vec!["h".to_owned()]
        });
        assert_eq!(disclosed, Disclosed::FewerThan { k: 10 });
        assert!(!computed);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, failure_persistence: None, ..Default::default() })]

        /// The same people get disjoint handle sets in two studies, the same set on a repeat.
        #[test]
        fn handles_for_the_same_people_differ_across_studies(
            people in proptest::collection::btree_set("account:[a-z0-9]{1,12}", 1..40),
            first in "[a-z0-9-]{1,16}",
            second in "[a-z0-9-]{1,16}",
        ) {
            proptest::prop_assume!(first != second);
            let key = b"server study key";
            let here: std::collections::BTreeSet<String> = people.iter().map(|p| handle(key, &first, p)).collect();
            let again: std::collections::BTreeSet<String> = people.iter().map(|p| handle(key, &first, p)).collect();
            let there: std::collections::BTreeSet<String> = people.iter().map(|p| handle(key, &second, p)).collect();
            proptest::prop_assert_eq!(&here, &again);
            proptest::prop_assert_eq!(here.len(), people.len());
            proptest::prop_assert!(here.is_disjoint(&there));
        }

        /// Nothing below k is ever released, neither the count nor a handle.
        #[test]
        fn counts_below_k_never_leak(count in 0u64..200, k in 1u64..50) {
            match disclose(count, k, || (0..count).map(|n| format!("h{n}")).collect()) {
                Disclosed::Count { count: released, handles } => {
                    proptest::prop_assert!(released >= k);
                    proptest::prop_assert_eq!(handles.len() as u64, released);
                }
                Disclosed::FewerThan { k: told } => {
                    proptest::prop_assert!(count < k);
                    proptest::prop_assert_eq!(told, k);
                }
            }
        }
    }
}
