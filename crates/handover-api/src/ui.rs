//! The web pages at `/ui/` for discharge teams, brokers and managers: the two worklists,
//! a person's journey with the hospital and council timeline side by side, and the flow
//! measures with charts.
//!
//! Server-rendered HTML (maud escapes every value), readable without JavaScript; a few
//! lines of script refresh a page when the projection moves on (server-sent events from
//! `/ui/updates`). Sign-in exchanges an API token for a session cookie (`HttpOnly`,
//! `SameSite=Strict`); pages apply the same roles as the API, and a journey page asks for
//! the reason for access before showing anything.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use futures::Stream;
use handover_events::NhsNumber;
use handover_projections::journey::{source_org, Entry, Journey, StayStatus};
use handover_projections::measures::{Distribution, FlowMeasures};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use rand::RngCore;

use crate::auth::{Caller, Role, ACCESS_REASONS};
use crate::policy::{audit, ClientAddr};
use crate::worklists::{brokerage_queue, delay_worklist, flow_measures};
use crate::{ApiError, AppState};

/// Name of the session cookie.
const COOKIE: &str = "handover_session";
/// How long a session lasts without use.
const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);

/// Signed-in browser sessions (in memory: a restart signs everyone out).
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    fn create(&self, caller: Caller) -> String {
        let mut id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut id);
        let id = hex::encode(id);
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|_, (_, t)| t.elapsed() < SESSION_IDLE);
            m.insert(id.clone(), (caller, Instant::now()));
        }
        id
    }

    fn get(&self, id: &str) -> Option<Caller> {
        let mut m = self.inner.lock().ok()?;
        match m.get_mut(id) {
            Some((c, t))
                if t.elapsed() < SESSION_IDLE
                    && c.expires.is_none_or(|e| e > std::time::SystemTime::now()) =>
            {
                *t = Instant::now();
                Some(c.clone())
            }
            _ => None,
        }
    }

    fn remove(&self, id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(id);
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// An error page, or a redirect to sign in.
pub enum UiError {
    /// Not signed in.
    SignIn,
    /// Anything the API would refuse.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn => Redirect::to("/ui/login").into_response(),
            UiError::Api(e) => {
                let status = e.status();
                if let ApiError::Internal(cause) = &e {
                    tracing::error!(error = %cause, "page failed");
                }
                let body = page(
                    "Problem",
                    None,
                    html! {
                        h1 { "Sorry, there is a problem" }
                        p { (e.to_string()) }
                        p { a href="/ui/delays" { "Back to the discharge delays" } }
                    },
                );
                (status, body).into_response()
            }
        }
    }
}

fn caller(st: &AppState, headers: &HeaderMap) -> Result<Caller, UiError> {
    let id = session_id(headers).ok_or(UiError::SignIn)?;
    st.sessions.get(&id).ok_or(UiError::SignIn)
}

fn people_reader(st: &AppState, headers: &HeaderMap) -> Result<Caller, UiError> {
    let c = caller(st, headers)?;
    if !c.role.reads_people() {
        return Err(ApiError::Forbidden {
            role: c.role.as_str().into(),
            action: "read people's records",
        }
        .into());
    }
    Ok(c)
}

const STYLE: &str = r#"
:root{--blue:#005eb8;--dark:#003087;--text:#212b32;--grey:#4c6272;--pale:#f0f4f5;--border:#d8dde0;--yellow:#ffeb3b;--red:#d5281b;--green:#007f3b;--warm:#ffb81c}
*{box-sizing:border-box}
body{margin:0;font-family:Arial,"Helvetica Neue",sans-serif;font-size:1rem;line-height:1.5;color:var(--text);background:var(--pale)}
a{color:var(--blue)}a:visited{color:#330072}a:hover{color:#7c2855}
a:focus,button:focus,input:focus,select:focus,summary:focus{outline:4px solid transparent;background-color:var(--yellow);box-shadow:0 -2px var(--yellow),0 4px #212b32;text-decoration:none;color:#212b32}
.skip{position:absolute;left:-9999px}.skip:focus{left:1rem;top:1rem;z-index:10;padding:.5rem}
header{background:var(--blue);color:#fff;padding:.75rem 1rem;display:flex;flex-wrap:wrap;gap:1rem;align-items:center;justify-content:space-between}
header a,header a:visited{color:#fff;font-weight:bold;text-decoration:none}
header .who{font-size:.9rem}
nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:1.25rem}
nav a[aria-current]{text-decoration:underline;text-underline-offset:.3em}
main{max-width:80rem;margin:0 auto;padding:1rem}
h1{font-size:1.75rem;margin:.5rem 0 1rem}h2{font-size:1.35rem;margin:1.5rem 0 .75rem}
.card{background:#fff;border:1px solid var(--border);padding:1rem;margin-bottom:1rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:1rem}
.figure{font-size:2rem;font-weight:bold;display:block}
table{border-collapse:collapse;width:100%;background:#fff}
caption{text-align:left;font-weight:bold;padding:.5rem 0}
th,td{border-bottom:1px solid var(--border);padding:.5rem;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid var(--grey)}
.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
.tag{display:inline-block;padding:0 .4rem;border:1px solid currentColor;font-size:.85rem;font-weight:bold}
.tag.council{color:#7c2855}.tag.nhs{color:var(--blue)}.tag.long{color:var(--red)}.tag.ok{color:var(--green)}
form.filters{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-end;margin-bottom:1rem}
label{display:block;font-weight:bold}
input,select{font-size:1rem;padding:.35rem;border:2px solid var(--text);min-width:8rem}
button{font-size:1rem;padding:.5rem 1rem;background:var(--green);color:#fff;border:0;box-shadow:0 4px 0 #00401e;cursor:pointer}
.timeline td.nhs{border-left:4px solid var(--blue)}.timeline td.council{border-left:4px solid #7c2855}
.muted{color:var(--grey)}
.notice{border-left:8px solid var(--blue);background:#fff;padding:.75rem 1rem;margin-bottom:1rem}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dl.summary dt{font-weight:bold}dl.summary dd{margin:0}
svg text{font-family:Arial,sans-serif;font-size:12px;fill:var(--text)}
.vh{position:absolute!important;width:1px!important;height:1px!important;overflow:hidden!important;clip:rect(0 0 0 0)!important}
@media (max-width:40rem){h1{font-size:1.4rem}main{padding:.5rem}}
"#;

/// Reloads the page when the read model moves on, unless the user is typing.
///
/// The stream is closed when the page is left. A browser keeps a left page
/// alive in its back-forward cache, and with it the open stream: after a few
/// pages every one of its six HTTP/1.1 connections to the server was held by
/// one, and the next page waited a minute to load. A page shown again from
/// that cache is reloaded, so it is never older than the read model.
const LIVE: &str = r#"
(function(){if(!window.EventSource)return;var first=null;var s=new EventSource('/ui/updates');
s.onmessage=function(e){if(first===null){first=e.data;return}if(e.data!==first){var a=document.activeElement;
if(a&&(a.tagName==='INPUT'||a.tagName==='SELECT'))return;location.reload()}};
window.addEventListener('pagehide',function(){s.close()});
window.addEventListener('pageshow',function(e){if(e.persisted)location.reload()})})();
"#;

fn page(title: &str, who: Option<(&Caller, &str)>, body: Markup) -> Response {
    let current = who.map(|(_, c)| c).unwrap_or("");
    let nav_item = |href: &str, label: &str, key: &str| {
        html! {
            li { @if current == key { a href=(href) aria-current="page" { (label) } } @else { a href=(href) { (label) } } }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en-GB" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – Handover" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                a class="skip" href="#main" { "Skip to main content" }
                header {
                    a href="/ui/" { "Handover" }
                    @if let Some((c, _)) = who {
                        nav aria-label="Main" {
                            ul {
                                (nav_item("/ui/delays", "Discharge delays", "delays"))
                                (nav_item("/ui/brokerage", "Brokerage queue", "brokerage"))
                                (nav_item("/ui/measures", "Flow measures", "measures"))
                            }
                        }
                        span class="who" {
                            (c.name) " · " (c.organisation) " · " (c.role.as_str()) " · "
                            form method="post" action="/ui/logout" style="display:inline" {
                                button type="submit" style="padding:.1rem .5rem;box-shadow:none;background:#003087" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (body) }
                @if who.is_some() { script { (PreEscaped(LIVE)) } }
            }
        }
    };
    let mut resp = (StatusCode::OK, axum::response::Html(markup.into_string())).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:"),
    );
    resp
}

pub(crate) async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match caller(&st, &headers) {
        Ok(c) if c.role.reads_people() => Redirect::to("/ui/delays").into_response(),
        Ok(c) if c.role == Role::Integration => Redirect::to("/ui/integration").into_response(),
        Ok(_) => Redirect::to("/ui/measures").into_response(),
        Err(_) => Redirect::to("/ui/login").into_response(),
    }
}

pub(crate) async fn login_form() -> Response {
    login_page(None)
}

fn login_page(error: Option<&str>) -> Response {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to Handover" }
            @if let Some(e) = error { div class="notice" role="alert" { (e) } }
            div class="card" {
                form method="post" action="/ui/login" {
                    label for="token" { "Access token" }
                    p class="muted" id="token-hint" { "The token your organisation issued you (handover dev prints one per role)." }
                    input type="password" id="token" name="token" autocomplete="off" aria-describedby="token-hint" required;
                    p { button type="submit" { "Sign in" } }
                }
            }
        },
    )
}

/// The sign-in form.
#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

pub(crate) async fn login(State(st): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", f.token.trim())) {
        headers.insert(header::AUTHORIZATION, v);
    }
    match st.auth.authenticate(&headers).await {
        Ok(c) => {
            let id = st.sessions.create(c);
            let cookie = format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict");
            let mut r = Redirect::to("/ui/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e @ (ApiError::InvalidToken(_) | ApiError::NoRole(_))) => {
            let mut r = login_page(Some(&format!("That token was refused: {e}.")));
            *r.status_mut() = e.status();
            r
        }
        Err(_) => {
            let mut r = login_page(Some("That token was not recognised."));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

pub(crate) async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        st.sessions.remove(&id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "handover_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

pub(crate) async fn updates(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    caller(&st, &headers)?;
    let rx = st.progress.clone();
    let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first {
            // Coalesce bursts: at most one update a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            rx.changed().await.ok()?;
        }
        let pos = rx.borrow_and_update().position;
        Some((Ok(SseEvent::default().data(pos.to_string())), (rx, false)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "–".into())
}

fn select(name: &str, label: &str, current: Option<&str>, options: &[(&str, &str)]) -> Markup {
    html! {
        div {
            label for=(name) { (label) }
            select id=(name) name=(name) {
                option value="" { "All" }
                @for (v, text) in options {
                    @if current == Some(*v) { option value=(v) selected { (text) } } @else { option value=(v) { (text) } }
                }
            }
        }
    }
}

const SITES: &[(&str, &str)] = &[("RX1CC", "RX1CC"), ("RR801", "RR801")];
const COUNCILS: &[(&str, &str)] = &[
    ("E08000035", "Leeds (E08000035)"),
    ("E08000032", "Bradford (E08000032)"),
];

/// `base` with the query `q`, its `name` parameter set to `value`.
fn with_param(base: &str, q: &HashMap<String, String>, name: &str, value: &str) -> String {
    let mut params: Vec<(&str, &str)> = q
        .iter()
        .filter(|(k, v)| *k != name && !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    params.sort();
    params.push((name, value));
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    format!("{base}?{}", qs.join("&"))
}

fn sort_link(base: &str, q: &HashMap<String, String>, key: &str, label: &str) -> Markup {
    let current = q.get("sort").map(String::as_str) == Some(key);
    html! {
        a href=(with_param(base, q, "sort", key)) aria-sort=[current.then_some("descending")] { (label) }
    }
}

/// "Rows a–b of n" with links to the previous and next pages, keeping the other parameters.
fn pager(
    base: &str,
    q: &HashMap<String, String>,
    offset: usize,
    limit: usize,
    shown: usize,
    total: usize,
) -> Markup {
    let link = |to: usize| with_param(base, q, "offset", &to.to_string());
    html! {
        nav class="pager" aria-label="Pages" {
            @if shown > 0 { "Rows " (offset + 1) "–" (offset + shown) " of " (total) } @else { "No rows on this page (" (total) " in all)" }
            @if offset > 0 { " · " a href=(link(offset.saturating_sub(limit))) rel="prev" { "Previous " (limit) } }
            @if offset + limit < total { " · " a href=(link(offset + limit)) rel="next" { "Next " (limit) } }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn delays(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: ClientAddr,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let c = people_reader(&st, &headers)?;
    let today = handover_events::time::london_today();
    let mut w = delay_worklist(&st, &c, &q, today)?;
    let people = w
        .rows
        .iter()
        .map(|r| crate::policy::Person::of(&r.row.person, r.audit_local_id.as_ref()));
    audit(&st, &c, "direct-care", "ui:discharge-delays", from, people).await?;
    match q.get("sort").map(String::as_str) {
        Some("site") => w
            .rows
            .sort_by(|a, b| (&a.row.site, &a.row.ward).cmp(&(&b.row.site, &b.row.ward))),
        Some("pathway") => w
            .rows
            .sort_by_key(|r| (r.row.pathway, std::cmp::Reverse(r.days_delayed))),
        Some("waiting") => w
            .rows
            .sort_by(|a, b| a.row.waiting_for.cmp(&b.row.waiting_for)),
        _ => {}
    }
    let g = |k: &str| q.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let delayed_days: i64 = w.rows.iter().map(|r| r.days_delayed).sum();
    Ok(page(
        "Discharge delays",
        Some((&c, "delays")),
        html! {
            h1 { "People past their discharge ready date" }
            p class="muted" { "Still in hospital after the date they stopped needing to be there. As of " (w.as_of) "; days counted in UK calendar days." }
            form class="filters" method="get" action="/ui/delays" {
                (select("site", "Site", g("site"), SITES))
                (select("council", "Council", g("council"), COUNCILS))
                (select("pathway", "Pathway", g("pathway"), &[("0","0 – home"),("1","1 – home with support"),("2","2 – community bed"),("3","3 – care home")]))
                button type="submit" { "Apply filters" }
            }
            div class="cards" {
                div class="card" { span class="figure" { (w.total) } "people delayed" }
                div class="card" { span class="figure" { (delayed_days) } "delayed bed-days so far (this page)" }
            }
            div class="scroll" {
                table {
                    caption { (w.total) " people, longest delay first" }
                    thead { tr {
                        th scope="col" { "Person" }
                        th scope="col" { (sort_link("/ui/delays", &q, "site", "Site and ward")) }
                        th scope="col" { "Ready date" }
                        th scope="col" class="num" { (sort_link("/ui/delays", &q, "days", "Days delayed")) }
                        th scope="col" { (sort_link("/ui/delays", &q, "pathway", "Pathway")) }
                        th scope="col" { "Latest delay" }
                        th scope="col" { "Referral / package" }
                        th scope="col" { (sort_link("/ui/delays", &q, "waiting", "Waiting for")) }
                    } }
                    tbody {
                        @for r in &w.rows {
                            tr {
                                td {
                                    @if let Some(n) = &r.row.person.nhs_number {
                                        a href={ "/ui/persons/" (n) } { (r.row.person.name.clone().unwrap_or_else(|| "Unnamed".into())) }
                                        br; span class="muted" { "NHS " (n) }
                                    } @else { (opt(&r.row.person.name)) }
                                }
                                td { (opt(&r.row.site)) br; span class="muted" { (opt(&r.row.ward)) } }
                                td { (r.row.discharge_ready_date) }
                                td class="num" {
                                    @if r.days_delayed >= 7 { span class="tag long" { (r.days_delayed) } } @else { (r.days_delayed) }
                                }
                                td { (opt(&r.row.pathway)) }
                                td {
                                    @if let Some(reason) = r.row.delay_reason { (reason.as_str()) br; span class="muted" { "attributed to " (opt(&r.row.attributed_to.map(|a| a.as_str()))) } }
                                    @else { span class="muted" { "none recorded" } }
                                }
                                td { "referral: " (opt(&r.row.referral_status.map(|s| format!("{s:?}").to_lowercase()))) br; "package: " (opt(&r.row.care_package_status.map(|s| format!("{s:?}").to_lowercase()))) }
                                td { strong { (r.row.waiting_for) } }
                            }
                        }
                    }
                }
            }
            (pager("/ui/delays", &q, w.offset, w.limit, w.rows.len(), w.total))
        },
    ))
}

pub(crate) async fn brokerage(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: ClientAddr,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let c = people_reader(&st, &headers)?;
    let today = handover_events::time::london_today();
    let mut w = brokerage_queue(&st, &c, &q, today)?;
    let people = w
        .rows
        .iter()
        .map(|r| crate::policy::Person::of(&r.row.person, r.audit_local_id.as_ref()));
    audit(&st, &c, "direct-care", "ui:brokerage", from, people).await?;
    match q.get("sort").map(String::as_str) {
        Some("waiting") => w.rows.sort_by_key(|r| std::cmp::Reverse(r.days_waiting)),
        Some("service") => w
            .rows
            .sort_by_key(|r| r.row.service_type.map(|s| s.as_str())),
        _ => {}
    }
    let g = |k: &str| q.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let services: Vec<(&str, &str)> = handover_events::catalogue::ServiceType::CODES
        .iter()
        .map(|c| (*c, *c))
        .collect();
    Ok(page(
        "Brokerage queue",
        Some((&c, "brokerage")),
        html! {
            h1 { "Care packages waiting to start" }
            p class="muted" { "Requested or sourced, not yet started. People delayed in hospital come first, then by required start. As of " (w.as_of) "." }
            form class="filters" method="get" action="/ui/brokerage" {
                (select("council", "Council", g("council"), COUNCILS))
                (select("service_type", "Service", g("service_type"), &services))
                button type="submit" { "Apply filters" }
            }
            div class="scroll" {
                table {
                    caption { (w.total) " packages" }
                    thead { tr {
                        th scope="col" { "Person" }
                        th scope="col" { (sort_link("/ui/brokerage", &q, "service", "Service")) }
                        th scope="col" { "Status" }
                        th scope="col" { "Required start" }
                        th scope="col" class="num" { (sort_link("/ui/brokerage", &q, "waiting", "Days waiting")) }
                        th scope="col" { "Hospital" }
                        th scope="col" { "Referral" }
                    } }
                    tbody {
                        @for r in &w.rows {
                            tr {
                                td {
                                    @if let Some(n) = &r.row.person.nhs_number {
                                        a href={ "/ui/persons/" (n) } { (r.row.person.name.clone().unwrap_or_else(|| "Unnamed".into())) }
                                        br; span class="muted" { "NHS " (n) }
                                    } @else { (opt(&r.row.person.name)) }
                                }
                                td {
                                    (opt(&r.row.service_type.map(|s| s.as_str())))
                                    @if let Some(h) = r.row.hours_per_week { br; span class="muted" { (h) " h/week" } }
                                    @if let Some(calls) = r.row.calls_per_day { span class="muted" { ", " (calls) " calls/day" } }
                                    @if let Some(carers) = r.row.carers_per_call.filter(|c| *c > 1) { span class="muted" { ", " (carers) " carers" } }
                                }
                                td { (format!("{:?}", r.row.status).to_lowercase()) @if let Some(p) = &r.row.provider { br; span class="muted" { (p) } } }
                                td { (opt(&r.row.required_start)) @if let Some(a) = &r.row.agreed_start { br; span class="muted" { "agreed " (a) } } }
                                td class="num" { (opt(&r.days_waiting)) }
                                td {
                                    @if let Some(h) = &r.row.hospital {
                                        @if r.delayed_in_hospital { span class="tag long" { "delayed " (opt(&r.days_delayed)) " days" } br; }
                                        @else { span class="tag nhs" { "in hospital" } br; }
                                        span class="muted" { (opt(&h.site)) " " (opt(&h.ward)) }
                                    } @else { span class="muted" { "not in hospital" } }
                                }
                                td { (opt(&r.row.referral_id)) br; span class="muted" { (opt(&r.row.referral_status.map(|s| format!("{s:?}").to_lowercase()))) } }
                            }
                        }
                    }
                }
            }
            (pager("/ui/brokerage", &q, w.offset, w.limit, w.rows.len(), w.total))
        },
    ))
}

/// What a timeline entry says, in a line.
pub fn describe(e: &Entry) -> String {
    let d = &e.data;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let n = |k: &str| d.get(k).map(|v| v.to_string()).unwrap_or_default();
    let kind = e
        .event_type
        .trim_start_matches("handover.")
        .trim_end_matches(".v1");
    match kind {
        "person.identified" => "Person identified".into(),
        "person.linked" => "Local record linked to the NHS number".into(),
        "person.nhs-number-changed" => "NHS number replaced a previous one".into(),
        "discharge.admitted" => format!(
            "Admitted to {} at {} ({})",
            s("ward"),
            s("site"),
            s("admission_method")
        ),
        "discharge.transferred" => format!("Moved to {}", s("ward")),
        "discharge.admission-cancelled" => "Admission cancelled".into(),
        "discharge.ready-date-recorded" => {
            format!("Discharge ready date {}", s("discharge_ready_date"))
        }
        "discharge.pathway-assigned" => format!("Pathway {} assigned", n("pathway")),
        "discharge.expected-date-set" => {
            format!("Expected discharge {}", s("expected_discharge_date"))
        }
        "discharge.delay-recorded" => format!(
            "Delay: {} (attributed to {})",
            s("reason"),
            s("attributed_to")
        ),
        "discharge.discharged" => format!("Discharged to {}", s("destination")),
        "discharge.discharge-cancelled" => "Discharge cancelled".into(),
        "referral.sent" => format!("Referral sent to {} ({})", s("to_council"), s("urgency")),
        "referral.accepted" => format!("Referral accepted {}", s("team")),
        "referral.declined" => format!("Referral declined: {}", s("reason")),
        "referral.withdrawn" => format!("Referral withdrawn: {}", s("reason")),
        "referral.assessment-completed" => {
            format!("{} assessment: {}", s("assessment_type"), s("outcome"))
        }
        "care-package.requested" => format!("{} package requested", s("service_type")),
        "care-package.sourced" => format!("Provider found, start {}", s("agreed_start")),
        "care-package.started" => format!("Care started {}", s("started_on")),
        "care-package.suspended" => "Care package suspended".into(),
        "care-package.resumed" => "Care package resumed".into(),
        "care-package.ended" => "Care package ended".into(),
        "care-package.cancelled" => "Care package cancelled".into(),
        other => other.to_string(),
    }
    .replace(" ()", "")
}

pub(crate) async fn person(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: ClientAddr,
    Path(nhs): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let c = people_reader(&st, &headers)?;
    let nhs = NhsNumber::parse(&nhs).map_err(|e| ApiError::InvalidNhsNumber(e.to_string()))?;
    let reason = q
        .get("reason")
        .map(String::as_str)
        .filter(|r| ACCESS_REASONS.contains(r));
    let Some(reason) = reason else {
        return Ok(page(
            "Reason for access",
            Some((&c, "")),
            html! {
                h1 { "Why are you opening this record?" }
                p { "Every view of a person's record is recorded with its reason." }
                form class="card" method="get" action={ "/ui/persons/" (nhs) } {
                    fieldset style="border:0;padding:0" {
                        legend { strong { "Reason for access" } }
                        @for (v, text) in [("direct-care","Direct care"),("safeguarding","Safeguarding"),("vital-interests","Vital interests"),("explicit-consent","Explicit consent")] {
                            div { input type="radio" id={ "r-" (v) } name="reason" value=(v) required; " " label for={ "r-" (v) } style="display:inline" { (text) } }
                        }
                    }
                    p { button type="submit" { "Open the record" } }
                }
            },
        ));
    };
    let mut journey = crate::read_journey(&st, &c, &nhs)?;
    audit(
        &st,
        &c,
        reason,
        "ui:journey",
        from,
        [nhs.as_string().as_str()],
    )
    .await?;
    crate::policy::minimise_journey(c.role, &c.organisation, &mut journey);
    let today = handover_events::time::london_today();
    Ok(page(
        "Journey",
        Some((&c, "")),
        journey_markup(&journey, today),
    ))
}

fn journey_markup(j: &Journey, today: NaiveDate) -> Markup {
    let id = &j.identity;
    let stay = j.current_stay();
    html! {
        h1 {
            (match (&id.family_name, &id.given_name) { (Some(f), Some(g)) => format!("{}, {g}", f.to_uppercase()), _ => "Person".into() })
        }
        div class="card" {
            dl class="summary" {
                dt { "NHS number" } dd { (opt(&j.nhs_number)) }
                dt { "Date of birth" } dd { (opt(&id.birth_date)) }
                dt { "Postcode" } dd { (opt(&id.postcode)) }
                dt { "GP practice" } dd { (opt(&id.gp_practice)) }
                dt { "Local records" } dd { @for l in &id.local_ids { (l.value) " " span class="muted" { "(" (l.system) ")" } br; } }
            }
        }
        h2 { "Hospital stay" }
        @if let Some(s) = stay {
            div class="card" {
                dl class="summary" {
                    dt { "Status" } dd { (match s.status { StayStatus::InHospital => "in hospital", StayStatus::Discharged => "discharged", StayStatus::Cancelled => "cancelled" }) }
                    dt { "Site and ward" } dd { (opt(&s.site)) ", " (opt(&s.ward)) }
                    dt { "Admitted" } dd { (opt(&s.admitted_at)) }
                    dt { "Discharge ready date" } dd { (opt(&s.discharge_ready_date)) }
                    dt { "Days delayed" } dd { (opt(&Journey::days_delayed(s, today))) }
                    dt { "Pathway" } dd { (opt(&s.pathway)) }
                    dt { "Expected discharge" } dd { (opt(&s.expected_discharge_date)) }
                    dt { "Latest delay" } dd { (opt(&s.latest_delay.as_ref().map(|d| format!("{} (attributed to {})", d.reason.as_str(), d.attributed_to.as_str())))) }
                    @if let Some(t) = &s.discharged_at { dt { "Discharged" } dd { (t) " to " (opt(&s.destination.map(|d| d.as_str()))) } }
                }
            }
        } @else { p { "No hospital stay recorded." } }
        h2 { "Referrals and care" }
        div class="cards" {
            @for r in &j.referrals {
                div class="card" {
                    strong { "Referral " (r.referral_id) } br;
                    (format!("{:?}", r.status).to_lowercase()) " · to " (opt(&r.to_council))
                    @for a in &r.assessments { br; (a.assessment_type.as_str()) " assessment: " (a.outcome.as_str()) }
                }
            }
            @for p in &j.care_packages {
                div class="card" {
                    strong { "Package " (p.package_id) } br;
                    (opt(&p.service_type.map(|s| s.as_str()))) " · " (format!("{:?}", p.status).to_lowercase())
                    @if let Some(pr) = &p.provider { br; "provider " (pr) }
                    @if let Some(s) = &p.started_on { br; "started " (s) }
                }
            }
            @if j.referrals.is_empty() && j.care_packages.is_empty() { p { "No referral or care package recorded." } }
        }
        h2 id="timeline" { "Timeline" }
        div class="scroll" {
            table class="timeline" aria-describedby="timeline" {
                thead { tr { th scope="col" { "When" } th scope="col" { "Hospital (NHS)" } th scope="col" { "Council" } } }
                tbody {
                    @for e in &j.timeline {
                        @let (org, sector) = source_org(&e.source);
                        tr {
                            td { (e.time) }
                            @if sector == "council" {
                                td {}
                                td class="council" { (describe(e)) br; span class="tag council" { (org) } }
                            } @else {
                                td class="nhs" { (describe(e)) br; span class="tag nhs" { (org) } }
                                td {}
                            }
                        }
                    }
                }
            }
        }
    }
}

fn bar_chart(title: &str, bars: &[(String, f64)], unit: &str) -> Markup {
    let max = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1.0);
    let (w, row) = (560.0, 22.0);
    let h = row * bars.len() as f64 + 10.0;
    let label = format!(
        "{title}: {}",
        bars.iter()
            .map(|(k, v)| format!("{k} {v}{unit}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    html! {
        figure class="card" style="margin:0 0 1rem" {
            figcaption { strong { (title) } }
            svg viewBox={ "0 0 " (w) " " (h) } width="100%" role="img" aria-label=(label) {
                @for (i, (k, v)) in bars.iter().enumerate() {
                    @let y = i as f64 * row + 5.0;
                    @let bw = (v / max) * (w - 170.0);
                    text x="0" y=(y + 14.0) { (k) }
                    rect x="110" y=(y) width=(bw.max(0.5)) height=(row - 6.0) fill="#005eb8" {}
                    text x=(115.0 + bw) y=(y + 14.0) { (v) (unit) }
                }
            }
            details { summary { "Show the figures as a table" }
                table { tbody { @for (k, v) in bars { tr { th scope="row" { (k) } td class="num" { (v) (unit) } } } } }
            }
        }
    }
}

fn dist_cell(d: &Distribution) -> Markup {
    html! { td class="num" { (d.count) } td class="num" { (opt(&d.median)) } td class="num" { (opt(&d.p90)) } }
}

fn pct(s: Option<f64>) -> String {
    s.map(|x| format!("{:.0}%", x * 100.0))
        .unwrap_or_else(|| "–".into())
}

pub(crate) async fn measures(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let c = caller(&st, &headers)?;
    if c.role == Role::Integration {
        return Err(ApiError::Forbidden {
            role: c.role.as_str().into(),
            action: "read care measures",
        }
        .into());
    }
    let m: FlowMeasures = flow_measures(&st, &q, handover_events::time::london_today())?;
    let g = |k: &str| q.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let mut hist: Vec<(String, f64)> = Vec::new();
    for (days, count) in &m.ready_to_discharge.histogram {
        let key = if *days >= 14 {
            "14+ days".to_string()
        } else {
            format!("{days} days")
        };
        match hist.last_mut() {
            Some((k, v)) if *k == key => *v += *count as f64,
            _ => hist.push((key, *count as f64)),
        }
    }
    let by_day: Vec<(String, f64)> = m
        .delayed_bed_days_by_day
        .iter()
        .rev()
        .take(14)
        .rev()
        .map(|(d, v)| (d.format("%a %d %b").to_string(), *v as f64))
        .collect();
    let mix: Vec<(String, f64)> = m
        .pathway_mix
        .iter()
        .map(|(k, v)| (format!("Pathway {k}"), *v as f64))
        .collect();
    Ok(page(
        "Flow measures",
        Some((&c, "measures")),
        html! {
            h1 { "Flow and outcomes" }
            form class="filters" method="get" action="/ui/measures" {
                div { label for="from" { "From" } input type="date" id="from" name="from" value=(m.from); }
                div { label for="to" { "To" } input type="date" id="to" name="to" value=(m.to); }
                (select("site", "Site", g("site"), SITES))
                (select("council", "Council", g("council"), COUNCILS))
                button type="submit" { "Apply" }
            }
            div class="cards" {
                div class="card" { span class="figure" { (m.admissions) } "admissions" }
                div class="card" { span class="figure" { (m.discharges) } "discharges" }
                div class="card" { span class="figure" { (m.delayed_bed_days) } "delayed bed-days" }
                div class="card" { span class="figure" { (m.delayed_now) } "delayed now" }
                div class="card" { span class="figure" { (opt(&m.ready_to_discharge.median)) } "median days ready → discharge (p90 " (opt(&m.ready_to_discharge.p90)) ")" }
                div class="card" { span class="figure" { (pct(m.discharged_to_usual_residence.share)) } "discharged to usual residence" }
                div class="card" { span class="figure" { (pct(m.readmitted_within_30_days.share)) } "readmitted within 30 days" }
                div class="card" { span class="figure" { (pct(m.at_home_91_days_after_reablement.at_home.share)) }
                    "at home 91 days after reablement (" (m.at_home_91_days_after_reablement.at_home.numerator) " of " (m.at_home_91_days_after_reablement.at_home.denominator) ", " (m.at_home_91_days_after_reablement.pending) " pending)" }
                div class="card" { span class="figure" { (pct(m.at_home_91_days_after_reablement.aged_65_and_over.share)) }
                    "of those aged 65 or over, ASCOF 2B(1) (" (m.at_home_91_days_after_reablement.aged_65_and_over.numerator) " of " (m.at_home_91_days_after_reablement.aged_65_and_over.denominator) "; age not known: " (m.at_home_91_days_after_reablement.age_unknown) ")" }
            }
            (bar_chart("Days from discharge ready date to discharge", &hist, " stays"))
            (bar_chart("Delayed bed-days by day (last 14 days of the period)", &by_day, ""))
            (bar_chart("Pathway mix of discharges", &mix, ""))
            div class="scroll" {
                table {
                    caption { "Ready → discharge by pathway and attribution (days)" }
                    thead { tr { th scope="col" { "Group" } th scope="col" class="num" { "Stays" } th scope="col" class="num" { "Median" } th scope="col" class="num" { "90th percentile" } } }
                    tbody {
                        @for (k, d) in &m.ready_to_discharge_by_pathway { tr { th scope="row" { "Pathway " (k) } (dist_cell(d)) } }
                        @for (k, d) in &m.ready_to_discharge_by_attribution { tr { th scope="row" { "Attributed to " (k) } (dist_cell(d)) } }
                    }
                }
            }
            p class="muted" { "Period " (m.from) " to " (m.to) ", as of " (m.as_of) ". Definitions: docs/measures.md." }
        },
    ))
}

/// The integration page (integration and admin roles): readiness, the event streams and
/// their consumers, and each projection's lag, from the latest status sample (as
/// `handover status` prints them). No person's data.
pub(crate) async fn integration(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let c = caller(&st, &headers)?;
    if !matches!(c.role, Role::Integration | Role::Admin) {
        return Err(ApiError::Forbidden {
            role: c.role.as_str().into(),
            action: "read the integration status",
        }
        .into());
    }
    let ready = st.readiness.check();
    let status = st.metrics.status();
    let progress = *st.progress.borrow();
    let sampled = chrono::DateTime::from_timestamp(status.sampled_at as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    Ok(page(
        "Integration",
        Some((&c, "integration")),
        html! {
            h1 { "Integration status" }
            div class="notice" {
                @match &ready {
                    Ok(()) => { span class="tag ok" { "Ready" } " The API is taking traffic and the projections are caught up." }
                    Err(why) => { span class="tag long" { "Not ready" } " " (why) }
                }
            }
            div class="cards" {
                div class="card" { span class="figure" { (progress.position) } "journey projection position" }
                div class="card" { span class="figure" { (progress.pending) } "events waiting to be projected" }
                div class="card" { span class="figure" { (progress.skipped) } "events skipped (undecodable)" }
            }
            div class="scroll" {
                table {
                    caption { "Streams" }
                    thead { tr { th scope="col" { "Stream" } th scope="col" class="num" { "Messages" } th scope="col" class="num" { "Bytes" } th scope="col" class="num" { "Last sequence" } th scope="col" class="num" { "Replicas" } } }
                    tbody {
                        @for r in &status.streams {
                            tr { th scope="row" { (r.name) } td class="num" { (r.messages) } td class="num" { (r.bytes) } td class="num" { (r.last_sequence) } td class="num" { (r.replicas) } }
                        }
                    }
                }
                table {
                    caption { "Consumers" }
                    thead { tr { th scope="col" { "Stream" } th scope="col" { "Consumer" } th scope="col" class="num" { "Pending" } th scope="col" class="num" { "Awaiting ack" } th scope="col" class="num" { "Ack floor" } } }
                    tbody {
                        @for r in &status.consumers {
                            tr { td { (r.stream) } th scope="row" { (r.name) } td class="num" { (r.pending) } td class="num" { (r.ack_pending) } td class="num" { (r.ack_floor) } }
                        }
                    }
                }
                table {
                    caption { "Projections" }
                    thead { tr { th scope="col" { "Projection" } th scope="col" class="num" { "Position" } th scope="col" class="num" { "Pending" } th scope="col" class="num" { "Seconds behind" } th scope="col" class="num" { "Parked" } } }
                    tbody {
                        @for r in &status.projections {
                            tr { th scope="row" { (r.name) } td class="num" { (r.position) } td class="num" { (r.pending) } td class="num" { (format!("{:.1}", r.lag_seconds)) } td class="num" { (r.parked.map(|p| p.to_string()).unwrap_or_else(|| "–".into())) } }
                        }
                    }
                }
            }
            p class="muted" {
                @match (&sampled, &status.error) {
                    (_, Some(e)) => { "The last status sample failed: " (e) }
                    (Some(t), None) if status.sampled_at > 0 => { "Sampled at " (t) ". Metrics at " a href="/metrics" { "/metrics" } "." }
                    _ => { "No status sample yet." }
                }
            }
        },
    ))
}
