//! `POST /v1/templates/import`: a docker-compose file becomes the next version of a
//! template in the templates directory.

use std::collections::BTreeMap;
use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiResult, AppState};
use crate::compose::{self, ImportFile};
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Template name: 1-40 of `[a-z0-9-]`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,39}$")]
    pub name: String,
    /// The compose file's text.
    pub compose: String,
    /// The compose file's name, for messages (default `docker-compose.yml`).
    #[serde(default)]
    pub source: Option<String>,
    /// Files its bind mounts and `env_file:` name, keyed as the compose file writes them.
    #[serde(default)]
    pub files: BTreeMap<String, ImportFile>,
    /// Values for `${VAR}` (the `.env` beside the compose file).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportView {
    pub template: String,
    pub version: String,
    /// Where it was written.
    pub path: String,
    /// What was mapped, changed or left out.
    pub notes: Vec<String>,
}

#[utoipa::path(post, path = "/v1/templates/import", request_body = ImportRequest,
    responses((status = 201, body = ImportView), (status = 422, body = super::Problem), (status = 409, body = super::Problem)))]
pub async fn import(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ImportRequest>,
) -> ApiResult<(StatusCode, Json<ImportView>)> {
    crate::spec::check_name("request", "name", &req.name)?;
    if crate::catalog::Catalog::is_builtin(&req.name) {
        return Err(Error::Conflict(format!(
            "`{}` is a built-in template and cannot be replaced; import under another name",
            req.name
        ))
        .into());
    }
    let dir = s.catalog.dir().ok_or_else(|| {
        Error::Conflict(
            "envd serves no templates directory to import into; start it with --templates-dir"
                .into(),
        )
    })?;
    let source = req.source.as_deref().unwrap_or("docker-compose.yml");
    let latest = match s.catalog.get(&req.name) {
        Ok(t) => t.version.parse::<u64>().unwrap_or(0),
        Err(_) => 0,
    };
    // Converted before a version is claimed, so a compose file that cannot be converted
    // leaves no empty version directory behind; again if another import took the version.
    let first = (latest + 1).to_string();
    let out = convert_blocking(&s, &req, source, &first).await?;
    // The version is claimed by creating its directory, so two imports never share one.
    let (version, path) = claim(dir, &req.name, latest + 1)?;
    let out = if version == first {
        Ok(out)
    } else {
        convert_blocking(&s, &req, source, &version).await
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir(path.parent().unwrap_or(&path));
            return Err(e.into());
        }
    };
    std::fs::write(&path, &out.template).io_ctx(|| format!("writing {}", path.display()))?;
    tracing::info!(template = %req.name, %version, "imported {source}");
    Ok((
        StatusCode::CREATED,
        Json(ImportView {
            template: req.name,
            version,
            path: path.display().to_string(),
            notes: out.notes,
        }),
    ))
}

/// The conversion on a blocking thread (it is CPU work on the caller's text).
async fn convert_blocking(
    s: &AppState,
    req: &ImportRequest,
    source: &str,
    version: &str,
) -> Result<compose::Output> {
    let (name, compose, files, vars) = (
        req.name.clone(),
        req.compose.clone(),
        req.files.clone(),
        req.env.clone(),
    );
    let (source, version, images) = (
        source.to_string(),
        version.to_string(),
        s.catalog.images.clone(),
    );
    tokio::task::spawn_blocking(move || {
        compose::convert(&compose::Input {
            name: &name,
            version: &version,
            compose: &compose,
            source: &source,
            files: &files,
            vars: &vars,
            images: &images,
        })
    })
    .await
    .map_err(|e| Error::step("import", format!("the conversion stopped: {e}")))?
}

/// Creates `<dir>/<name>/<n>/` for the first free `n` from `from`; returns the version and
/// the template file's path.
fn claim(dir: &Path, name: &str, from: u64) -> Result<(String, std::path::PathBuf)> {
    let parent = dir.join(name);
    std::fs::create_dir_all(&parent).io_ctx(|| format!("creating {}", parent.display()))?;
    for n in from..from + 1000 {
        let d = parent.join(n.to_string());
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok((n.to_string(), d.join("template.yaml"))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: format!("creating {}", d.display()),
                    source: e,
                });
            }
        }
    }
    Err(Error::Conflict(format!(
        "template `{name}` has no free version after {from}"
    )))
}
