//! Users' images: `POST /v1/images` takes a `docker save` archive (streamed to disk,
//! bounded by the upload cap and the owner's quota) and makes each image in it pullable
//! by the owner's envs under the name it was saved with; `GET` lists (an owner's own,
//! an admin's all), `DELETE /v1/images/{id}` forgets one.

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
    let cap = reg.cfg.max_upload;
    // The archive is removed however the request ends (dropped with `incoming`).
    let incoming = reg.blobs.temp()?;
    let file = incoming
        .as_file()
        .try_clone()
        .io_ctx(|| "opening the upload's file".into())?;
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::invalid("request", "body", format!("reading the upload: {e}")))?;
        n += chunk.len() as u64;
        if n > cap {
            return Err(too_big(format!(
                "the upload is over the cap of {cap} bytes (registry.max_upload in envd's config)"
            )));
        }
        file.write_all(&chunk)
            .await
            .io_ctx(|| "writing the upload".into())?;
    }
    file.flush().await.io_ctx(|| "writing the upload".into())?;
    drop(file);
    let (out, replaced) = {
        // Until the uploads are recorded, no cleanup may take their blobs.
        let pushing = reg.gc.read().await;
        let (path, blobs) = (incoming.path().to_path_buf(), reg.blobs.clone());
        let saved = tokio::task::spawn_blocking(move || registry::save::import(&path, &blobs))
            .await
            .map_err(|e| Error::step("images", format!("reading the archive: {e}")))??;
        let checked = match names_of(&saved) {
            Ok(named) => within_quota(&s, &caller.owner, &named)
                .await
                .map(|()| named),
            Err(e) => Err(e.into()),
        };
        let named = match checked {
            Ok(named) => named,
            Err(e) => {
                // Refused: what the archive brought goes unless an upload already had it.
                drop(pushing);
                collect_garbage(&s, saved.into_iter().map(|i| i.manifest).collect()).await?;
                return Err(e);
            }
        };
        let recorded = record(&s, &caller.owner, named).await?;
        drop(pushing);
        recorded
    };
    if !replaced.is_empty() {
        collect_garbage(&s, replaced).await?;
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Each image of the archive under each of its names: (reference, manifest, bytes).
fn names_of(saved: &[registry::save::Saved]) -> Result<Vec<(String, String, u64)>, Error> {
    let mut out = vec![];
    for img in saved {
        if img.tags.is_empty() {
            return Err(Error::invalid(
                "request",
                "body",
                "an image in the archive has no name: save it by name (docker save shop:x), not by id",
            ));
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
            out.push((reference, img.manifest.clone(), img.bytes));
        }
    }
    Ok(out)
}

/// Whether the owner's uploads stay within the quota once these are in (replacing the
/// owner's uploads of the same names): the bytes of distinct blobs, a shared layer once.
async fn within_quota(
    s: &AppState,
    owner: &str,
    named: &[(String, String, u64)],
) -> Result<(), ApiError> {
    let reg = &s.engine.registry;
    let mut manifests: Vec<String> = s
        .engine
        .store
        .images(Some(owner))
        .await?
        .into_iter()
        .filter(|i| !named.iter().any(|(r, _, _)| *r == i.reference))
        .map(|i| i.digest)
        .collect();
    let before = reg.distinct_bytes(&manifests);
    manifests.extend(named.iter().map(|(_, m, _)| m.clone()));
    let after = reg.distinct_bytes(&manifests);
    if after > reg.cfg.quota {
        return Err(too_big(format!(
            "the images of owner `{owner}` would pass their quota: {after} bytes with this push ({before} stored; layers shared between images count once), {} allowed; remove some (envd images rm)",
            reg.cfg.quota
        )));
    }
    Ok(())
}

/// Publishes and records the uploads; returns their rows and the manifests of the
/// uploads they replaced (no longer served).
async fn record(
    s: &AppState,
    owner: &str,
    named: Vec<(String, String, u64)>,
) -> Result<(Vec<UploadedImage>, Vec<String>), ApiError> {
    let reg = &s.engine.registry;
    let (mut out, mut replaced) = (vec![], vec![]);
    for (reference, manifest, bytes) in named {
        let key = registry::new_key();
        reg.publish(&key, &manifest)?;
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let before = s.engine.store.image_by_ref(owner, &reference).await?;
        if let Some(old) = s
            .engine
            .store
            .put_image(&key, owner, &reference, &manifest, bytes)
            .await?
        {
            reg.unpublish(&old);
            replaced.extend(before.map(|b| b.digest));
        }
        if let Some(row) = s.engine.store.image(&key).await? {
            out.push(row);
        }
    }
    Ok((out, replaced))
}

/// After uploads were removed or replaced: deletes the blobs nothing names any more
/// (another upload of any owner, a cached registry tag). Best effort: a failure leaves
/// files, never a broken upload.
async fn collect_garbage(s: &AppState, gone: Vec<String>) -> Result<(), Error> {
    let reg = &s.engine.registry;
    let _alone = reg.gc.write().await;
    let keep = s
        .engine
        .store
        .images(None)
        .await?
        .into_iter()
        .map(|i| i.digest)
        .collect();
    match reg.collect(gone, keep).await {
        Ok(n) => tracing::info!("removed {n} image blobs no upload names any more"),
        Err(e) => tracing::warn!("removing unused image blobs: {e}"),
    }
    Ok(())
}

/// `envd images ls`: the caller's uploads; an admin's lists every owner's.
#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = Vec<UploadedImage>)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<UploadedImage>>> {
    Ok(Json(s.engine.store.images(caller.scope()).await?))
}

/// `envd images rm`: envs created later can no longer name it (running ones keep it);
/// its blobs that no other upload names are deleted.
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
            collect_garbage(&s, vec![img.digest]).await?;
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
