//! Users' images: `POST /v1/images` takes a `docker save` archive (streamed to disk,
//! bounded by the upload cap and the owner's quota) and makes each image in it pullable
//! by the owner's envs under the name it was saved with; `GET` lists (an owner's own,
//! an admin's all), `DELETE /v1/images/{id}` forgets one.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::pods::ConfigRequest;
use super::{ApiError, ApiResult, AppState, Json};
use crate::auth::Caller;
use crate::engine::registry::{self, ImageRef};
use crate::error::{Error, IoContext};
use crate::store::UploadedImage;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/images",
            get(list)
                .post(push)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/images/{id}", delete(remove))
}

fn too_big(detail: String) -> ApiError {
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Too big".into(),
        detail,
        Some("body".into()),
    )
}

/// Removes the incoming archive however the request ends.
struct Incoming(PathBuf);

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `envd images push`: the body is a `docker save` archive (`application/x-tar`) of
/// one or more images; each is stored under every name it was saved with, replacing
/// the caller's earlier upload of that name.
#[utoipa::path(post, path = "/v1/images",
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "`docker save IMAGE...`"),
    responses((status = 201, body = Vec<UploadedImage>, description = "stored; envs of this owner can name them"),
    (status = 413, body = super::Problem, description = "over the upload cap or the owner's image quota"),
    (status = 422, body = super::Problem, description = "not a `docker save` archive, or an image without a valid name")))]
pub async fn push(State(s): State<AppState>, caller: Caller, body: Body) -> ApiResult<Response> {
    let reg = &s.engine.registry;
    let used = u64::try_from(s.engine.store.image_bytes(&caller.owner).await?).unwrap_or(0);
    let room = reg.cfg.quota.saturating_sub(used);
    let cap = reg.cfg.max_upload.min(room);
    let (tmp, file) = reg.blobs.temp()?;
    let incoming = Incoming(tmp);
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::invalid("request", "body", format!("reading the upload: {e}")))?;
        n += chunk.len() as u64;
        if n > cap {
            return Err(too_big(if cap == room && room < reg.cfg.max_upload {
                format!(
                    "the images of owner `{}` would pass their quota: {used} bytes stored, {} allowed; remove some (envd images rm)",
                    caller.owner, reg.cfg.quota
                )
            } else {
                format!(
                    "the upload is over the cap of {} bytes (registry.max_upload in envd's config)",
                    reg.cfg.max_upload
                )
            }));
        }
        file.write_all(&chunk)
            .await
            .io_ctx(|| "writing the upload".into())?;
    }
    file.flush().await.io_ctx(|| "writing the upload".into())?;
    drop(file);
    let (path, blobs) = (incoming.0.clone(), reg.blobs.clone());
    let saved = tokio::task::spawn_blocking(move || registry::save::import(&path, &blobs))
        .await
        .map_err(|e| Error::step("images", format!("reading the archive: {e}")))??;
    let mut out = vec![];
    for img in saved {
        if img.tags.is_empty() {
            return Err(Error::invalid(
                "request",
                "body",
                "an image in the archive has no name: save it by name (docker save shop:x), not by id",
            )
            .into());
        }
        for tag in &img.tags {
            let reference = ImageRef::parse(tag)
                .ok_or_else(|| {
                    Error::invalid(
                        "request",
                        "body",
                        format!("`{tag}` is not an image reference"),
                    )
                })?
                .canonical();
            let key = registry::new_key();
            reg.publish(&key, &img.manifest)?;
            let bytes = i64::try_from(img.bytes).unwrap_or(i64::MAX);
            if let Some(old) = s
                .engine
                .store
                .put_image(&key, &caller.owner, &reference, &img.manifest, bytes)
                .await?
            {
                reg.unpublish(&old);
            }
            if let Some(row) = s.engine.store.image(&key).await? {
                out.push(row);
            }
        }
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `envd images ls`: the caller's uploads; an admin's lists every owner's.
#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = Vec<UploadedImage>)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<UploadedImage>>> {
    Ok(Json(s.engine.store.images(caller.scope()).await?))
}

/// `envd images rm`: envs created later can no longer name it (running ones keep it).
#[utoipa::path(delete, path = "/v1/images/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = super::Problem)))]
pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let found = s.engine.store.image(&id).await?;
    match found {
        Some(img) if caller.scope().is_none_or(|o| o == img.owner) => {
            s.engine.store.delete_image(&id).await?;
            s.engine.registry.unpublish(&id);
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(Error::NotFound(format!(
            "uploaded image `{id}` (list them with GET /v1/images)"
        ))
        .into()),
    }
}

/// A deploy (`image` in a PATCH) as the answer that records it.
pub(super) fn deploy_answers(pod: &str, req: &mut ConfigRequest) -> Result<(), Error> {
    let Some(image) = req.image.take() else {
        if req.container.is_some() {
            return Err(Error::invalid(
                "request",
                "container",
                "give `image` with `container`",
            ));
        }
        return Ok(());
    };
    if ImageRef::parse(&image).is_none() {
        return Err(Error::invalid(
            "request",
            "image",
            format!("`{image}` is not an image reference (e.g. registry.lab/shop:feature-x)"),
        ));
    }
    let target = match req.container.take() {
        Some(c) => format!("{pod}/{c}"),
        None => pod.to_string(),
    };
    req.answers.insert(crate::spec::images::key(&target), image);
    Ok(())
}
