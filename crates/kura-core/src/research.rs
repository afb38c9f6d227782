//! Research subjects: who a research search can find. A subject is a person whose records can
//! be searched. Records a patient owns belong to `account:<patient>`; records an institution
//! still owns belong to the institution's local patient, `local:<institution>:<local id>`.
//! Only subjects whose owner opted in (`discoverable`) are findable (DESIGN.md, I6).

use crate::ids::OrgId;
use crate::party::Party;

/// The research subject of a record with this owner, institution and local patient id.
pub fn subject_of_record(owner: &Party, institution: &OrgId, local_id: &str) -> String {
    match owner {
        Party::Account(patient) => format!("account:{patient}"),
        Party::Organisation(org) if org == institution => format!("local:{institution}:{local_id}"),
        // An in-server copy held by another organisation is not the holder's subject to offer.
        Party::Organisation(org) => format!("held:{org}:{institution}:{local_id}"),
    }
}

/// The owner who answers usage requests about `subject`.
pub fn owner_of_subject(subject: &str) -> Option<Party> {
    if let Some(account) = subject.strip_prefix("account:") {
        return Party::from_text(&format!("account:{account}"));
    }
    let rest = subject.strip_prefix("local:")?;
    let (institution, _) = rest.split_once(':')?;
    Party::from_text(&format!("org:{institution}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;

    #[test]
    fn subjects_and_their_owners() {
        let aoba = OrgId::parse("aoba").unwrap();
        let alice = Party::Account(AccountId::parse("alice").unwrap());
        let hospital = Party::Organisation(aoba.clone());
        assert_eq!(subject_of_record(&alice, &aoba, "MRN-1"), "account:alice");
        assert_eq!(subject_of_record(&hospital, &aoba, "MRN-1"), "local:aoba:MRN-1");
        assert_eq!(owner_of_subject("account:alice"), Some(alice));
        assert_eq!(owner_of_subject("local:aoba:MRN-1"), Some(hospital));
        assert_eq!(owner_of_subject("held:x:aoba:MRN-1"), None);
    }
}
