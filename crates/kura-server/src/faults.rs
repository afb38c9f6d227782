//! Fault injection for tests of the peer move protocol: named points where a handler stops as
//! if the process had died there (it answers 500 and does nothing further). Points are armed
//! by tests through `App::arm_fault` and fire once. In production nothing is ever armed.
//!
//! Points: `move.after_prepare` (origin: the move is recorded, nothing sent), `move.after_peer_store`
//! (peer: the record is stored pending, the answer is dropped), `move.after_commit` (origin:
//! the record ended here, the confirmation is not sent), `peer.drop_confirm` (peer: the
//! confirmation is dropped before anything is done).

use std::collections::HashSet;
use std::sync::Mutex;

use crate::service::error::ServiceError;

#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<HashSet<String>>,
}

impl Faults {
    pub fn arm(&self, point: &str) {
        if let Ok(mut armed) = self.armed.lock() {
            armed.insert(point.to_owned());
        }
    }

    /// `Err` (as if the process died) when `point` is armed; disarms it.
    pub fn check(&self, point: &str) -> Result<(), ServiceError> {
        let fired = self.armed.lock().map(|mut armed| armed.remove(point)).unwrap_or(false);
        if fired {
            tracing::warn!(point, "injected fault");
            return Err(ServiceError::Internal);
        }
        Ok(())
    }
}
