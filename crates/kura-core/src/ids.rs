//! Opaque identifiers. Each kind of id is its own type so that a grant id can never be passed
//! where a record id is expected.

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id that came from storage or from the wire. Ids are opaque: any
            /// non-empty string of at most 128 visible ASCII characters is accepted.
            pub fn parse(raw: &str) -> Result<Self, crate::ids::InvalidId> {
                if raw.is_empty() || raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(crate::ids::InvalidId);
                }
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

/// An id string that is empty, too long or holds characters outside visible ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid id")]
pub struct InvalidId;

opaque_id!(
    /// A record (one unit of medical information).
    RecordId
);
opaque_id!(
    /// A person's or a machine client's account.
    AccountId
);
opaque_id!(
    /// An organisation: an institution or a research organisation.
    OrgId
);
opaque_id!(
    /// A grant of usage conditions.
    GrantId
);
opaque_id!(
    /// A delegation from a patient to an agent.
    DelegationId
);
opaque_id!(
    /// A custody transfer.
    TransferId
);
