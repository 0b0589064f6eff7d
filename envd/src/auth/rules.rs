//! One rule per route, keyed by method and the route's pattern as the router writes it.
//! A route without a rule is refused (403, logged), and the authorization test fails on
//! any route of /openapi.json missing here.

use axum::http::Method;

use super::Role;
use super::Role::{Admin, Ci, User, Viewer};

#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// No token needed.
    Open,
    /// Open unless `guard_metrics`; then any role.
    Metrics,
    /// Open unless `guard_openapi`; then any role.
    OpenApi,
    /// A token of one of these roles. Env routes also scope to the token's owner.
    Roles(&'static [Role]),
    /// A web UI page for these roles: without a valid session the browser is sent to sign in.
    Page(&'static [Role]),
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// Recorded in the audit trail.
    pub audit: bool,
}

const READ: Access = Access::Roles(&[Viewer, User, Ci, Admin]);
const WRITE: Access = Access::Roles(&[User, Ci, Admin]);
const EXEC: Access = Access::Roles(&[User, Admin]);
const ADMIN: Access = Access::Roles(&[Admin]);

const fn r(method: &'static str, path: &'static str, access: Access, audit: bool) -> Rule {
    Rule {
        method,
        path,
        access,
        audit,
    }
}

pub const RULES: &[Rule] = &[
    r("GET", "/healthz", Access::Open, false),
    r("GET", "/metrics", Access::Metrics, false),
    r("GET", "/openapi.json", Access::OpenApi, false),
    r("GET", "/v1/whoami", READ, false),
    r("GET", "/v1/quota", READ, false),
    r("GET", "/v1/templates", READ, false),
    r("POST", "/v1/templates/import", ADMIN, true),
    r("DELETE", "/v1/templates/{name}", ADMIN, true),
    r("GET", "/v1/envs", READ, false),
    r("POST", "/v1/envs", WRITE, true),
    r("DELETE", "/v1/envs", WRITE, true),
    r("GET", "/v1/envs/{id}", READ, false),
    r("DELETE", "/v1/envs/{id}", WRITE, true),
    r("GET", "/v1/envs/{id}/events", READ, false),
    r("GET", "/v1/envs/{id}/logs", WRITE, false),
    r("POST", "/v1/envs/{id}/extend", WRITE, true),
    r("POST", "/v1/envs/{id}/clone", WRITE, true),
    r("PATCH", "/v1/envs/{id}/pods/{pod}", WRITE, true),
    // A WebSocket session runs commands: audited like a POST.
    r("GET", "/v1/envs/{id}/pods/{pod}/exec", EXEC, true),
    r("POST", "/v1/envs/{id}/pods/{pod}/exec", EXEC, true),
    r("GET", "/v1/jobs", ADMIN, false),
    r("POST", "/v1/jobs/{name}/run", ADMIN, true),
    r("GET", "/v1/tokens", ADMIN, false),
    r("POST", "/v1/tokens", ADMIN, true),
    r("DELETE", "/v1/tokens/{id}", ADMIN, true),
    r("GET", "/v1/audit", ADMIN, false),
    r("GET", "/v1/pools", ADMIN, false),
    r("PUT", "/v1/pools/{name}", ADMIN, true),
    r("GET", "/v1/images", READ, false),
    r("POST", "/v1/images", WRITE, true),
    r("DELETE", "/v1/images/{id}", WRITE, true),
    // The forges sign their deliveries with the hook's secret: checked by the handler
    // (constant time), never a token.
    r("POST", "/v1/hooks/github", Access::Open, false),
    r("POST", "/v1/hooks/gitlab", Access::Open, false),
];

const PAGE: Access = Access::Page(&[Viewer, User, Ci, Admin]);

/// The web UI's routes: pages (their data comes from the API, under the API's rules),
/// sign-in and the embedded assets. Not part of the API document.
pub const PAGES: &[Rule] = &[
    r("GET", "/", PAGE, false),
    r("GET", "/catalog", PAGE, false),
    r("GET", "/catalog/{name}", PAGE, false),
    r("GET", "/envs/{id}", PAGE, false),
    r("GET", "/jobs", Access::Page(&[Admin]), false),
    r("GET", "/ui/fields/{name}", PAGE, false),
    r("GET", "/ui/static/{file}", Access::Open, false),
    // Sign-in checks the token and the form's CSRF field itself.
    r("GET", "/login", Access::Open, false),
    r("POST", "/login", Access::Open, false),
    r("POST", "/logout", Access::Open, false),
];

/// The rule of a request; HEAD is checked as GET (the router answers it with GET's handler).
pub fn find(method: &Method, route: &str) -> Option<&'static Rule> {
    let m = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    RULES
        .iter()
        .chain(PAGES)
        .find(|r| r.method == m && r.path == route)
}

/// The roles a rule admits, for the README matrix and the OpenAPI document.
pub fn roles(rule: &Rule) -> Vec<Role> {
    match rule.access {
        Access::Roles(r) | Access::Page(r) => r.to_vec(),
        _ => Role::ALL.to_vec(),
    }
}
