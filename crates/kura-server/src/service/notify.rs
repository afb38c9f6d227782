//! Notifications: the persisted inbox entries, their live stream (SSE) and, for organisations,
//! webhook deliveries (queued by the store in the same transaction as the inbox entry).

use kura_core::party::Party;
use kura_core::policy::Action;
use kura_core::time::Timestamp;
use kura_store::model::Notification;

use super::error::ServiceResult;
use crate::state::AppState;

pub fn new(recipient: &str, kind: &str, about: &str, message: &str, now: Timestamp) -> Notification {
    Notification {
        seq: 0,
        id: super::ids::new_id(),
        recipient: recipient.to_owned(),
        kind: kind.to_owned(),
        subject_ref: about.to_owned(),
        message: message.to_owned(),
        created_at: now,
        read_at: None,
    }
}

/// A notification to an owner and, for a patient, to every agent who may answer for them.
pub async fn to_owner_and_agents(
    state: &AppState,
    owner: &Party,
    kind: &str,
    about: &str,
    message: &str,
    now: Timestamp,
) -> ServiceResult<Vec<Notification>> {
    let mut out = vec![new(&owner.to_text(), kind, about, message, now)];
    if let Party::Account(patient) = owner {
        for row in state.store.delegations_involving(patient).await? {
            let d = &row.delegation;
            if &d.patient == patient && d.is_active(now) && d.powers.contains(Action::ManageGrants) {
                out.push(new(&Party::Account(d.agent.clone()).to_text(), kind, about, message, now));
            }
        }
    }
    Ok(out)
}

/// Hands committed notifications to live subscribers. Nobody listening is not an error.
pub fn publish(state: &AppState, notifications: Vec<Notification>) {
    for notification in notifications {
        let _ = state.events.send(notification);
    }
}
