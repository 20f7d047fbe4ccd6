//! The sector rule: which kinds of organisation may assert which events (a council cannot
//! assert a hospital discharge). Applied by the API to every publish, by the journey
//! projection to every stored event, and compiled into the NATS permissions of direct
//! producers (deploy/nats-permissions.conf).

use crate::catalogue::EventType;

/// Whether a source of `sector` (`nhs` for `urn:ods:…`, `council` for `urn:gss:…`) may
/// assert events of type `t`: an NHS source may not assert a council's events (referral
/// answers, assessments, care packages), a council source not a hospital's (stays,
/// readiness, delays, discharges) nor send a referral as if from a hospital. Any other
/// sector may assert nothing.
pub fn sector_may_assert(sector: &str, t: EventType) -> bool {
    use EventType::*;
    match sector {
        "nhs" => !matches!(
            t,
            ReferralAccepted
                | ReferralDeclined
                | AssessmentCompleted
                | PackageRequested
                | PackageRequestedV2
                | PackageSourced
                | PackageStarted
                | PackageSuspended
                | PackageResumed
                | PackageEnded
                | PackageCancelled
        ),
        "council" => !matches!(
            t,
            Admitted
                | Transferred
                | AdmissionCancelled
                | ReadyDateRecorded
                | PathwayAssigned
                | ExpectedDateSet
                | DelayRecorded
                | Discharged
                | DischargeCancelled
                | ReferralSent
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_council_cannot_assert_a_discharge_nor_a_trust_a_care_package() {
        assert!(sector_may_assert("nhs", EventType::Discharged));
        assert!(!sector_may_assert("council", EventType::Discharged));
        assert!(sector_may_assert("council", EventType::PackageStarted));
        assert!(!sector_may_assert("nhs", EventType::PackageStarted));
        assert!(sector_may_assert("nhs", EventType::PersonIdentified));
        assert!(sector_may_assert("council", EventType::PersonIdentified));
        assert!(!sector_may_assert("other", EventType::PersonIdentified));
    }
}
