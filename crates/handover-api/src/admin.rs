//! Admin operations of the running server (admin role only).
//!
//! - `POST /v1/admin/rebuild/{projection}`: starts a zero-downtime rebuild (`202` with its
//!   status; `409` while one runs; `404` for an unknown projection);
//! - `GET /v1/admin/rebuild/{projection}`: the current or last rebuild's status (position,
//!   target, events per second, ETA), polled by `handover rebuild`.
//!
//! [`router`] has its own state, merged beside [`crate::app`] by the runtime.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use handover_projections::{RebuildRefused, Rebuilds};

use crate::{ApiError, Auth, Role};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Token table.
    pub auth: Arc<Auth>,
    /// The server's rebuild queue.
    pub rebuilds: Arc<Rebuilds>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/v1/admin/rebuild/{projection}",
            get(get_rebuild).post(post_rebuild),
        )
        .with_state(state)
}

async fn admin(st: &AdminState, headers: &HeaderMap, action: &'static str) -> Result<(), ApiError> {
    let caller = st.auth.authenticate(headers).await?;
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden {
            role: caller.role.as_str().into(),
            action,
        });
    }
    Ok(())
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(serde_json::json!({
            "type": format!("{}{kind}", crate::problem::PROBLEM_BASE),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        })),
    )
        .into_response()
}

async fn post_rebuild(
    State(st): State<AdminState>,
    Path(projection): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&st, &headers, "rebuild projections").await?;
    Ok(match st.rebuilds.request(&projection, "requested") {
        Ok(status) => {
            tracing::info!(projection, "rebuild requested through the admin API");
            (StatusCode::ACCEPTED, Json(status)).into_response()
        }
        Err(e @ RebuildRefused::UnknownProjection(_)) => problem(
            StatusCode::NOT_FOUND,
            "unknown-projection",
            "Unknown projection",
            e.to_string(),
        ),
        Err(e @ RebuildRefused::Running(_)) => problem(
            StatusCode::CONFLICT,
            "rebuild-running",
            "A rebuild is already running",
            e.to_string(),
        ),
    })
}

async fn get_rebuild(
    State(st): State<AdminState>,
    Path(projection): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&st, &headers, "see rebuilds").await?;
    let status = st.rebuilds.status();
    if status.projection != projection {
        return Ok(problem(
            StatusCode::NOT_FOUND,
            "unknown-projection",
            "Unknown projection",
            RebuildRefused::UnknownProjection(projection).to_string(),
        ));
    }
    Ok(Json(status).into_response())
}
