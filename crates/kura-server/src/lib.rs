//! Kura's HTTP server: the axum router, authentication, the handlers of every flow, the
//! sweeper that destroys expired copies, metrics and the OpenAPI document.
//!
//! Only this crate knows HTTP. Every read or change of record content goes through
//! `kura_core::policy::decide`; handlers never reach content without the `Permit` it returns.
//! Logs carry ids and outcomes, never content or credentials.

mod analysis;
mod app;
pub mod archive;
mod audit_batch;
mod auth;
mod clock;
mod config;
mod content;
mod data_dir;
mod error;
mod faults;
mod http_hygiene;
pub mod identity;
mod metrics;
mod notify;
mod openapi;
pub mod outbound;
mod peers;
mod providers;
mod pseudonyms;
pub mod research_index;
mod routes;
pub mod settings;
mod spool;
mod sweeper;
mod time;
mod webhooks;

pub use app::{App, StartResult, serve, serve_on};
pub use auth::totp_code;
pub use clock::Clock;
pub use config::Config;
pub use openapi::openapi_json;
pub use webhooks::signature as webhook_signature;
