//! `POST /v1/admin/persons/{nhs_number}/erasure`: erase a person (admin role).
//!
//! 1. the person's keys are found (their journey's key, their NHS number's, and every linked
//!    local id's or merged number's);
//! 2. every event under those keys is purged from the stream;
//! 3. once the projection has passed the stream's end as it was after the purge (so nothing
//!    of theirs is still in flight), their journey, worklist and measure rows and aliases
//!    are removed from the read model;
//! 4. the erasure itself is recorded in the access audit (who, why, when), which is kept.
//!
//! A rebuild replays the purged stream, so it cannot bring them back. See
//! docs/governance.md for when erasure applies (UK GDPR Art. 17(3)).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use handover_events::NhsNumber;
use serde::{Deserialize, Serialize};

use crate::policy::{audit, ClientAddr};
use crate::{ApiError, AppState, Role};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// Why (recorded in the audit), e.g. the reference of the controller's decision.
    pub reason: String,
}

/// What was erased.
#[derive(Debug, Serialize)]
pub struct Erased {
    /// Events purged from the stream.
    pub events_purged: u64,
    /// Read-model entries removed.
    pub read_model_entries_removed: usize,
    /// Person keys erased (pseudonymous).
    pub person_keys: usize,
}

pub(crate) async fn erase(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: ClientAddr,
    Path(nhs_number): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = st.auth.authenticate(&headers).await?;
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden {
            role: caller.role.as_str().into(),
            action: "erase a person",
        });
    }
    let nhs =
        NhsNumber::parse(&nhs_number).map_err(|e| ApiError::InvalidNhsNumber(e.to_string()))?;
    let req: ErasureRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("send {{\"reason\": \"…\"}}: {e}")))?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason must not be empty".into()));
    }
    let admin = st.log_admin.as_ref().ok_or(ApiError::Unavailable)?;
    // A rebuild replaying the log now could take the person's events into its shadow
    // before the purge below and swap them back in: no rebuild runs while this does.
    let _no_rebuild = st.rebuilds.hold_for_erasure().map_err(|_| {
        ApiError::Conflict(
            "a rebuild of the read model is running; erase once it has finished \
             (GET /v1/admin/rebuild/journey shows its progress)"
                .into(),
        )
    })?;
    let keys = handover_projections::erase::person_keys(
        st.journeys.pseudonym_key(),
        &st.journey_tree,
        &nhs,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Record the erasure before doing it: the record of the decision must not be lost.
    audit(
        &st,
        &caller,
        req.reason.trim(),
        "erasure",
        from,
        [nhs.as_string().as_str()],
    )
    .await?;
    let purged = admin
        .purge_people(&keys)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let end = admin
        .last_sequence()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    // Let the projection pass the stream's end, so nothing of theirs is still being applied.
    // When their events were the last ones and had not been projected, the projection never
    // reaches `end` (the purged messages are not delivered): after a short wait, go on.
    let mut progress = st.progress.clone();
    let caught_up = tokio::time::timeout(
        Duration::from_secs(5),
        progress.wait_for(|p| p.position >= end),
    )
    .await
    .is_ok();
    if !caught_up {
        tracing::info!("projection did not reach the stream end before erasing; continuing");
    }
    let mut tx = st.journey_tree.begin_exclusive().await;
    let removed = handover_projections::erase::erase(&st.journey_tree, &mut tx, &keys)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // The removals must not move the projection's position, nor set it back when one of
    // its batches commits meanwhile.
    st.journey_tree
        .commit_keeping_position(tx)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(
        events_purged = purged,
        entries_removed = removed,
        "person erased"
    );
    Ok(Json(Erased {
        events_purged: purged,
        read_model_entries_removed: removed,
        person_keys: keys.len(),
    })
    .into_response())
}
