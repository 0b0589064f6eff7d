//! The browser's session: the bearer token in an HttpOnly, SameSite=Strict cookie, and a
//! double-submit CSRF token (a readable cookie the page's scripts echo in a header).

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use serde::Deserialize;

use crate::api::AppState;

pub const SESSION_COOKIE: &str = "envd_session";
pub const CSRF_COOKIE: &str = "envd_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The session's token, when the browser has one.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// Whether a cookie-authenticated request proves it came from our own page: the CSRF
/// header (or form field) equals the CSRF cookie, which another site can neither read nor set.
pub fn csrf_ok(headers: &HeaderMap, form_value: Option<&str>) -> bool {
    let Some(expected) = cookie(headers, CSRF_COOKIE) else {
        return false;
    };
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(form_value);
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CSRF token of this browser, and the cookie to set when it has none yet.
pub fn csrf_for(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(v) = cookie(headers, CSRF_COOKIE) {
        return (v.to_string(), None);
    }
    let v = random_hex();
    let set = format!("{CSRF_COOKIE}={v}; Path=/; SameSite=Strict");
    (v, HeaderValue::from_str(&set).ok())
}

/// Only local paths may follow a sign-in (no open redirect to another site).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

fn back_to_login(next: &str, error: &str) -> Response {
    let to = format!(
        "/login?next={}&error={}",
        crate::urlencode(next),
        crate::urlencode(error)
    );
    Redirect::to(&to).into_response()
}

/// `POST /login`: a valid token becomes the session cookie.
pub async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    if !csrf_ok(&headers, Some(&f.csrf)) {
        return back_to_login(&next, "the sign-in form expired; try again");
    }
    let token = f.token.trim();
    if let Err(why) = crate::auth::check_token(&s.engine.store, &s.auth, token).await {
        return back_to_login(&next, &why.2);
    }
    let session = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&session) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /logout`: the session cookie is dropped.
pub async fn logout(headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    if !csrf_ok(&headers, Some(&f.csrf)) {
        return Redirect::to("/").into_response();
    }
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(c: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
        h
    }

    #[test]
    fn csrf_needs_the_cookie_and_the_same_value() {
        let h = with_cookie("envd_csrf=abc; envd_session=t");
        assert!(csrf_ok(&h, Some("abc")));
        assert!(!csrf_ok(&h, Some("abd")));
        assert!(!csrf_ok(&h, None));
        assert!(!csrf_ok(&HeaderMap::new(), Some("abc")));
        assert_eq!(token(&h), Some("t"));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/envs/x")), "/envs/x");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
