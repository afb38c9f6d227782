//! Kura's domain model and policy core.
//!
//! This crate owns the rules that decide who may touch a record: parties, records and their
//! parts, the custody ledger's vocabulary, transfer agreements, grants, delegations, the audit
//! chain, and the one function every read and write path goes through, [`policy::decide`].
//!
//! It must never do IO: no async runtime, no database, no HTTP, no serde on domain types. Every
//! rule here is a pure function of plain data so that it can be tested exhaustively.

pub mod audit;
pub mod custody;
pub mod ids;
pub mod labels;
pub mod party;
pub mod policy;
pub mod record;
pub mod research;
pub mod time;
