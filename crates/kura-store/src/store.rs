use crate::{
    AccountStore, AnalysisStore, ArchiveStore, AuditStore, DisclosureStore, GrantStore, LoginStore, NoticeStore,
    PeerStore, ProviderStore, RecordStore, ResearchStore, SealedStore,
};

/// Errors every backend maps its driver errors into. Messages never carry record content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule or a concurrent change refused the write; nothing was applied.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The stored data is not what this version of Kura wrote.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("storage backend: {0}")]
    Backend(String),
}

/// Metadata storage: every capability in one. Every method that changes state writes the
/// state, the custody ledger entry and the audit entry in one transaction, or nothing at all.
///
/// Implemented for every type that implements each capability trait; callers holding an
/// `Arc<dyn Store>` reach every capability's methods through it, and code that needs only some
/// capabilities can ask for just those.
pub trait Store:
    AccountStore
    + LoginStore
    + RecordStore
    + GrantStore
    + NoticeStore
    + AuditStore
    + ResearchStore
    + DisclosureStore
    + AnalysisStore
    + SealedStore
    + ArchiveStore
    + ProviderStore
    + PeerStore
    + Send
    + Sync
{
}

impl<T> Store for T where
    T: AccountStore
        + LoginStore
        + RecordStore
        + GrantStore
        + NoticeStore
        + AuditStore
        + ResearchStore
        + DisclosureStore
        + AnalysisStore
        + SealedStore
        + ArchiveStore
        + ProviderStore
        + PeerStore
        + Send
        + Sync
{
}
