//! Storage for Kura: the [`Store`] trait every metadata backend implements (the capability
//! traits it combines, one file each), the error type they map their driver errors into, the
//! content envelope (a data key per record, wrapped by the master key) and blob stores for the
//! encrypted content.
//!
//! This crate knows no SQL and no HTTP. Record content only leaves it decrypted in exchange for a
//! [`kura_core::policy::Permit`], which only the policy core can produce.

mod accounts;
mod analysis;
mod archive;
mod audit;
pub mod blob;
mod disclosure;
pub mod envelope;
mod grants;
mod login;
pub mod model;
mod notices;
pub mod package;
mod peers;
mod providers;
mod records;
mod research;
mod sealed;
mod store;

pub use accounts::AccountStore;
pub use analysis::AnalysisStore;
pub use archive::ArchiveStore;
pub use audit::{AuditStore, BlockingAuditWriter};
pub use disclosure::{DisclosureStore, PartitionWrite};
pub use grants::GrantStore;
pub use login::LoginStore;
pub use notices::NoticeStore;
pub use peers::PeerStore;
pub use providers::ProviderStore;
pub use records::RecordStore;
pub use research::ResearchStore;
pub use sealed::SealedStore;
pub use store::{Store, StoreError};
