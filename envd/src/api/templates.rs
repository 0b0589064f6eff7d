//! `GET /v1/templates`: the catalog with each template's questions, password defaults masked.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiResult, AppState};
use crate::spec::Question;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub name: String,
    /// Oldest first; a create without a version takes the last.
    pub versions: Vec<String>,
    /// Of the latest version, as are the questions.
    pub description: String,
    /// What `answers` may set: type, label, default (a password's masked), constraints.
    pub variables: Vec<Question>,
    /// Why the latest version cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/v1/templates", responses((status = 200, body = [TemplateView], description = "the catalog")))]
pub async fn templates(State(s): State<AppState>) -> ApiResult<Json<Vec<TemplateView>>> {
    let mut out = vec![];
    for (name, versions) in s.catalog.all()? {
        let latest = s.catalog.get(&name)?;
        let (description, variables, error) =
            match crate::spec::questions::describe(&latest.origin, &latest.text) {
                Ok((d, qs)) => (d, qs.iter().map(Question::shown).collect(), None),
                Err(e) => (String::new(), vec![], Some(e.to_string())),
            };
        let mut versions: Vec<String> = versions.into_keys().collect();
        versions.sort_by(|a, b| crate::catalog::version_cmp(a, b));
        out.push(TemplateView {
            name,
            versions,
            description,
            variables,
            error,
        });
    }
    Ok(Json(out))
}
