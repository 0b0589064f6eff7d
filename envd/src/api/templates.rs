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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Only this version (default: every version of the template).
    version: Option<String>,
}

/// Removes an imported template (or one version) from the templates directory. Live envs
/// keep the text they were made from. Built-in templates cannot be deleted.
#[utoipa::path(delete, path = "/v1/templates/{name}", operation_id = "delete_template", params(("name" = String, Path), DeleteParams),
    responses((status = 204, description = "deleted"), (status = 404, body = super::Problem),
    (status = 409, body = super::Problem, description = "a built-in template"),
    (status = 422, body = super::Problem, description = "not a template name")))]
pub async fn delete(
    State(s): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    super::ApiQuery(q): super::ApiQuery<DeleteParams>,
) -> ApiResult<axum::http::StatusCode> {
    use crate::error::{Error, IoContext};
    crate::spec::check_name("request", "name", &name)?;
    if crate::catalog::Catalog::is_builtin(&name) {
        return Err(Error::Conflict(format!(
            "`{name}` is a built-in template and cannot be deleted"
        ))
        .into());
    }
    let gone = || Error::NotFound(format!("template `{name}` in the templates directory"));
    let dir = s.catalog.dir().ok_or_else(gone)?.join(&name);
    let path = match &q.version {
        Some(v) => {
            let ok = !v.starts_with('.')
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(Error::invalid("query", "version", "write a version like 2").into());
            }
            dir.join(v)
        }
        None => dir.clone(),
    };
    if !path.is_dir() {
        return Err(gone().into());
    }
    std::fs::remove_dir_all(&path).io_ctx(|| format!("removing {}", path.display()))?;
    // The last version gone: the template's directory goes too.
    if q.version.is_some() && std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
        let _ = std::fs::remove_dir(&dir);
    }
    tracing::info!(template = %name, version = ?q.version, "deleted");
    Ok(axum::http::StatusCode::NO_CONTENT)
}
