//! The workflows of the server, each written once and called by every front door that needs
//! it: the JSON API's handlers (`routes/`), and the background jobs (provider pulls, move
//! recovery, the sweeper). A service takes the state and plain values, and answers with
//! [`error::ServiceError`]; it knows no HTTP — handlers extract the request, call a service and
//! map its answer to a response.
//!
//! Nothing here imports from the handlers in `routes/` (`tests/layering.rs` checks it).

pub mod accounts;
pub mod analyses;
pub mod archive;
pub mod audit;
pub mod content;
pub mod delegations;
pub mod disclosure;
pub mod error;
pub mod grants;
pub mod ids;
pub mod ingest;
pub mod notify;
pub mod peers;
pub mod providers;
pub mod records;
pub mod research;
pub mod sealed;
pub mod transfer;
pub mod usage;
