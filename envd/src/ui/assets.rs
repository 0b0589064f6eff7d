//! The UI's scripts and styles, compiled into the binary. They are served with a long
//! cache life; pages name them with `?v=<content hash>` so a new build is fetched anew.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css", include_str!("static/app.css")),
    ("app.js", "text/javascript", include_str!("static/app.js")),
    ("envs.js", "text/javascript", include_str!("static/envs.js")),
    ("form.js", "text/javascript", include_str!("static/form.js")),
    ("env.js", "text/javascript", include_str!("static/env.js")),
    (
        "shell.js",
        "text/javascript",
        include_str!("static/shell.js"),
    ),
    ("jobs.js", "text/javascript", include_str!("static/jobs.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("static/favicon.svg"),
    ),
    // term.js (Expat licence, from Debian's libjs-term.js; see vendor/term.js.LICENSE).
    (
        "term.min.js",
        "text/javascript",
        include_str!("static/vendor/term.min.js"),
    ),
];

/// A hash of every asset: changes whenever one does.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ASSETS.hash(&mut h);
        format!("{:x}", h.finish())
    })
}

pub async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
