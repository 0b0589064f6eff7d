//! `GET /v1/envs`: the listing, its pages, and its answers kept until the store changes.
//! A dashboard or a CI loop asks for the same listing again and again; on a SQLite file
//! the answer is kept per query and given again while the store's version is the same
//! (see `store/version.rs`), so a repeat costs one small read instead of the listing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiQuery, ApiResult, AppState, EnvView, access};
use crate::auth::Caller;
use crate::error::Error;
use crate::store::EnvFilter;

/// Listing answers kept, per query (the caller's scope is part of it), with the store
/// version each was made at.
#[derive(Default)]
pub(crate) struct Listings {
    kept: Mutex<HashMap<String, (i64, Arc<Kept>)>>,
}

/// One listing's answer: its JSON and its `Link` to the next page.
struct Kept {
    body: Bytes,
    next: Option<HeaderValue>,
}

impl Kept {
    fn response(&self) -> Response {
        let mut resp = (
            [(header::CONTENT_TYPE, "application/json")],
            self.body.clone(),
        )
            .into_response();
        if let Some(next) = &self.next {
            resp.headers_mut().insert(header::LINK, next.clone());
        }
        resp
    }
}

impl Listings {
    /// Queries kept at most; past it, the cache starts over (a bound, whatever callers ask).
    const MAX: usize = 256;

    fn get(&self, query: &str, version: i64) -> Option<Arc<Kept>> {
        let kept = self.lock();
        let (at, answer) = kept.get(query)?;
        (*at == version).then(|| Arc::clone(answer))
    }

    fn put(&self, query: String, version: i64, answer: Kept) {
        let mut kept = self.lock();
        if kept.len() >= Self::MAX && !kept.contains_key(&query) {
            kept.clear();
        }
        kept.insert(query, (version, Arc::new(answer)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Arc<Kept>)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Envs one page of `GET /v1/envs` holds unless `limit` says otherwise, and at most.
const LIST_LIMIT: u32 = 200;
const LIST_MAX: u32 = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only envs in this state (`gone` and `failed` are the history).
    #[param(pattern = "^(requested|creating|ready|collecting|freeing|gone|failed|pooled)$")]
    state: Option<String>,
    owner: Option<String>,
    key: Option<String>,
    /// `name=value`
    #[param(pattern = "^[^=]*=")]
    label: Option<String>,
    /// Finished envs (gone, failed) too; by default only live ones are listed.
    #[serde(default)]
    all: bool,
    /// Envs per page, newest first (default 200, at most 1000); a `Link: <…>; rel="next"`
    /// header points at the next page when there may be one.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the page starts: from the previous page's `Link` header.
    #[param(pattern = "^[0-9]{1,18}\\.[0-9a-z-]{1,64}$")]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/envs", params(ListParams), responses((status = 200, body = [EnvView], headers(("Link" = String, description = "`<…>; rel=\"next\"`: the next page, when this one is full")))))]
pub(super) async fn list(
    State(s): State<AppState>,
    Extension(listings): Extension<Arc<Listings>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let owner = access::listed_owner(&caller, q.owner.clone())?;
    let label = match &q.label {
        Some(l) => Some(
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Error::invalid("query", "label", "write the label filter as name=value")
                })?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(LIST_LIMIT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(Error::invalid(
            "query",
            "limit",
            format!("a page holds 1 to {LIST_MAX} envs; follow the Link header for more"),
        )
        .into());
    }
    let f = EnvFilter {
        state: q.state.as_deref().map(str::parse).transpose()?,
        owner,
        key: q.key.clone(),
        label,
        all: q.all,
        limit: Some(limit),
        after: q.cursor.as_deref().map(str::parse).transpose()?,
    };
    // Read before the listing: anything committed after it makes the next one differ.
    let version = s.engine.store.version().await?;
    let kept_as = format!("{f:?}");
    if let Some(v) = version
        && let Some(kept) = listings.get(&kept_as, v)
    {
        return Ok(kept.response());
    }
    let envs = s.engine.store.list(&f).await?;
    let views: Vec<EnvView> = envs.iter().map(|e| s.view(e)).collect();
    // A full page may have a next one: the same query from after its last env.
    let next = match envs.last() {
        Some(last) if envs.len() == limit as usize => {
            let next = next_page(&q, limit, &crate::store::Cursor::of(last));
            header::HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).ok()
        }
        _ => None,
    };
    let kept = Kept {
        body: serde_json::to_vec(&views)
            .map_err(|e| Error::step("list", e.to_string()))?
            .into(),
        next,
    };
    let resp = kept.response();
    if let Some(v) = version {
        listings.put(kept_as, v, kept);
    }
    Ok(resp)
}

/// The path of the listing's next page: the same filters, from `cursor`.
fn next_page(q: &ListParams, limit: u32, cursor: &crate::store::Cursor) -> String {
    let mut parts = vec![];
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k}={}", crate::urlencode(v)));
        }
    };
    add("state", &q.state);
    add("owner", &q.owner);
    add("key", &q.key);
    add("label", &q.label);
    if q.all {
        parts.push("all=true".into());
    }
    parts.push(format!("limit={limit}"));
    parts.push(format!("cursor={}", crate::urlencode(&cursor.to_string())));
    format!("/v1/envs?{}", parts.join("&"))
}
