//! The web UI at `/`: pages rendered on the server (minijinja, embedded in the binary)
//! whose live parts are small scripts calling the same JSON API as the CLI. The browser
//! holds the token in an HttpOnly, SameSite=Strict cookie; every request that changes
//! something also carries the double-submit CSRF header (see `session`).

use std::sync::OnceLock;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Deserialize;

use crate::api::{ApiResult, AppState};
use crate::auth::Caller;

mod assets;
pub mod session;

pub use session::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(envs_page))
        .route("/login", get(login_page).post(session::login))
        .route("/logout", axum::routing::post(session::logout))
        .route("/catalog", get(catalog_page))
        .route("/catalog/{name}", get(form_page))
        .route("/envs/{id}", get(env_page))
        .route("/jobs", get(jobs_page))
        .route("/ui/fields/{name}", get(fields_fragment))
        .route("/ui/static/{file}", get(assets::serve))
}

fn pages() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("layout.html", include_str!("ui/pages/layout.html")),
            ("login.html", include_str!("ui/pages/login.html")),
            ("envs.html", include_str!("ui/pages/envs.html")),
            ("catalog.html", include_str!("ui/pages/catalog.html")),
            ("form.html", include_str!("ui/pages/form.html")),
            ("fields.html", include_str!("ui/pages/fields.html")),
            ("env.html", include_str!("ui/pages/env.html")),
            ("fragment.html", include_str!("ui/pages/fragment.html")),
            ("jobs.html", include_str!("ui/pages/jobs.html")),
        ] {
            // The sources are ours and compiled in; a syntax error is caught by the tests.
            if let Err(e) = env.add_template(name, src) {
                tracing::error!("ui page {name}: {e}");
            }
        }
        env
    })
}

/// The caller the guard admitted, if any (pages always have one; the sign-in page not).
type Me = Option<Extension<Caller>>;

/// Renders `page` with the common context (asset version, who is signed in).
fn render(page: &str, me: &Me, ctx: minijinja::Value) -> Response {
    let base = context! {
        v => assets::version(),
        signed_in => me.is_some(),
        owner => me.as_ref().map(|c| c.owner.clone()),
        role => me.as_ref().map(|c| c.role.as_str()),
    };
    let out = pages()
        .get_template(page)
        .and_then(|t| t.render(context! { ..base, ..ctx }));
    match out {
        Ok(html) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::CONTENT_SECURITY_POLICY, CSP),
            ],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!("rendering {page}: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; envd's log has the cause",
            )
                .into_response()
        }
    }
}

/// Scripts only from envd itself (inline styles are allowed: the terminal colours its
/// cells with them); the exec WebSocket is same-origin.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

async fn login_page(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let (csrf, set) = session::csrf_for(&headers);
    let mut page = render(
        "login.html",
        &None,
        context! { next => session::safe_next(q.next.as_deref()), error => q.error, csrf => csrf },
    );
    if let Some(cookie) = set {
        page.headers_mut().append(header::SET_COOKIE, cookie);
    }
    page
}

async fn envs_page(me: Me) -> Response {
    render("envs.html", &me, context! {})
}

async fn catalog_page(State(s): State<AppState>, me: Me) -> ApiResult<Response> {
    let templates = crate::api::templates::views(&s.catalog)?;
    Ok(render(
        "catalog.html",
        &me,
        context! { templates => Value::from(Serde(&templates)) },
    ))
}

#[derive(Deserialize)]
struct FormQuery {
    version: Option<String>,
}

async fn form_page(
    State(s): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    Query(q): Query<FormQuery>,
) -> ApiResult<Response> {
    let spec = match &q.version {
        Some(v) => format!("{name}:{v}"),
        None => name.clone(),
    };
    let view = crate::api::templates::view(&s.catalog, &spec)?;
    Ok(render(
        "form.html",
        &me,
        context! { t => Value::from(Serde(&view)), version => q.version },
    ))
}

/// The question fields of a template version, for the env page's config form.
async fn fields_fragment(
    State(s): State<AppState>,
    me: Me,
    Path(name): Path<String>,
    Query(q): Query<FormQuery>,
) -> ApiResult<Response> {
    let spec = match q.version.as_deref() {
        Some(v) if !v.is_empty() => format!("{name}:{v}"),
        _ => name,
    };
    let view = crate::api::templates::view(&s.catalog, &spec)?;
    Ok(render(
        "fragment.html",
        &me,
        context! { t => Value::from(Serde(&view)) },
    ))
}

async fn env_page(me: Me, Path(id): Path<String>) -> Response {
    // Lifecycle values the page needs, from the enums: the event kinds it listens to on
    // the event stream, the states in which an env has ended.
    let kinds: Vec<&str> = crate::lifecycle::EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    let ended: Vec<&str> = crate::lifecycle::State::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str())
        .collect();
    render(
        "env.html",
        &me,
        context! { id => id, kinds => kinds.join(" "), ended => ended.join(" ") },
    )
}

async fn jobs_page(me: Me) -> Response {
    render("jobs.html", &me, context! {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_parses() {
        let env = pages();
        for page in [
            "layout.html",
            "login.html",
            "envs.html",
            "catalog.html",
            "form.html",
            "env.html",
            "jobs.html",
            "fragment.html",
        ] {
            assert!(env.get_template(page).is_ok(), "{page} does not parse");
        }
    }

    #[tokio::test]
    async fn the_env_page_carries_the_lifecycle_words_of_the_enums() {
        use http_body_util::BodyExt;
        let page = env_page(None, Path("e1".into())).await;
        let body = page.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8_lossy(&body);
        let kinds: Vec<&str> = crate::lifecycle::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert!(
            html.contains(&format!("data-kinds=\"{}\"", kinds.join(" "))),
            "{html}"
        );
        assert!(html.contains("data-ended=\"gone failed\""), "{html}");
    }
}
