//! Kura's HTTP server: the axum router, authentication, the handlers of every flow and the
//! services they share with the background jobs, the sweeper that destroys expired copies,
//! metrics and the OpenAPI document.
//!
//! Layers: `app` wires `routes` (HTTP handlers) over `service` (workflows) over `state`;
//! nothing outside `routes` imports from it (`tests/layering.rs`).
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

mod data_dir;
mod error;
mod faults;
mod http_hygiene;
pub mod identity;
mod metrics;

mod openapi;
pub mod outbound;

mod pseudonyms;
pub mod research_index;
mod routes;
mod service;
pub mod settings;
mod spool;
mod state;
mod sweeper;
mod time;
mod webhooks;

pub use app::{App, serve, serve_on};
pub use auth::totp_code;
pub use clock::Clock;
pub use config::Config;
pub use openapi::openapi_json;
pub use state::StartResult;
pub use webhooks::signature as webhook_signature;
