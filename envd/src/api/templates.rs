//! `GET /v1/templates`: the catalog with each template's questions, password defaults masked.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiResult, AppState};
use crate::catalog::Catalog;
use crate::error::Result;
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
    Ok(Json(views(&s.catalog)?))
}

/// Every template of the catalog, described by its latest version.
pub fn views(catalog: &Catalog) -> Result<Vec<TemplateView>> {
    let mut out = vec![];
    for (name, versions) in catalog.all()? {
        let mut versions: Vec<String> = versions.into_keys().collect();
        versions.sort_by(|a, b| crate::catalog::version_cmp(a, b));
        out.push(describe(catalog, &name, versions)?);
    }
    Ok(out)
}

/// One template (`name` or `name:version`), described by that version.
pub fn view(catalog: &Catalog, spec: &str) -> Result<TemplateView> {
    let name = spec.split_once(':').map_or(spec, |(n, _)| n);
    let mut versions: Vec<String> = catalog
        .all()?
        .remove(name)
        .map(|v| v.into_keys().collect())
        .unwrap_or_default();
    versions.sort_by(|a, b| crate::catalog::version_cmp(a, b));
    describe(catalog, spec, versions)
}

fn describe(catalog: &Catalog, spec: &str, versions: Vec<String>) -> Result<TemplateView> {
    let source = catalog.get(spec)?;
    let (description, variables, error) =
        match crate::spec::questions::describe(&source.origin, &source.text) {
            Ok((d, qs)) => (d, qs.iter().map(Question::shown).collect(), None),
            Err(e) => (String::new(), vec![], Some(e.to_string())),
        };
    Ok(TemplateView {
        name: source.name,
        versions,
        description,
        variables,
        error,
    })
}
