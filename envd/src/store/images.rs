//! Uploaded images: one row per owner and reference; and image pulls as they progress,
//! pushed to watchers without a row.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, now_ms};
use crate::error::Result;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UploadedImage {
    /// The key nodes pull it under; also what `DELETE /v1/images/{id}` takes.
    pub id: String,
    pub owner: String,
    /// How templates name it, e.g. `shop:feature-x`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The digest of its manifest in envd's registry.
    pub digest: String,
    pub bytes: i64,
    pub created_at: i64,
}

fn from_row(r: &AnyRow) -> Result<UploadedImage> {
    Ok(UploadedImage {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        reference: r.try_get("ref")?,
        digest: r.try_get("digest")?,
        bytes: r.try_get("bytes")?,
        created_at: r.try_get("created_at")?,
    })
}

macro_rules! columns {
    () => {
        "id, owner, ref, digest, bytes, created_at"
    };
}

impl Store {
    /// Records an upload under `reference`, replacing the owner's earlier one of that
    /// name; returns the replaced row's key (no longer served).
    pub async fn put_image(
        &self,
        id: &str,
        owner: &str,
        reference: &str,
        digest: &str,
        bytes: i64,
    ) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let old = sqlx::query("SELECT id FROM images WHERE owner = $1 AND ref = $2")
            .bind(owner)
            .bind(reference)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?;
        sqlx::query("DELETE FROM images WHERE owner = $1 AND ref = $2")
            .bind(owner)
            .bind(reference)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO images (id, owner, ref, digest, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(owner)
            .bind(reference)
            .bind(digest)
            .bind(bytes)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(old)
    }

    pub async fn image_by_ref(
        &self,
        owner: &str,
        reference: &str,
    ) -> Result<Option<UploadedImage>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM images WHERE owner = $1 AND ref = $2"
        ))
        .bind(owner)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    pub async fn image(&self, id: &str) -> Result<Option<UploadedImage>> {
        sqlx::query(concat!("SELECT ", columns!(), " FROM images WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    /// One owner's uploads, or everyone's.
    pub async fn images(&self, owner: Option<&str>) -> Result<Vec<UploadedImage>> {
        let rows = match owner {
            Some(o) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM images WHERE owner = $1 ORDER BY ref"
                ))
                .bind(o)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM images ORDER BY owner, ref"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_image(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM images WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

/// One image's pull into an env, as pushed to watchers (`event: progress` on the env's
/// events stream; at most one a second per image; never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PullProgress {
    pub env_id: String,
    pub pod: String,
    pub image: String,
    /// Bytes downloaded of `total` (the layers the node lacks, as far as known yet).
    pub done: u64,
    pub total: u64,
    /// Layers in the node, of the image's layers.
    pub layers_done: u32,
    pub layers: u32,
    /// The pull ended (pulled or failed: the env's events say which).
    pub finished: bool,
}

/// The PostgreSQL channel of pull progress (a NOTIFY each, no table).
pub(super) const PULLS_CHANNEL: &str = "envd_pulls";

impl Store {
    /// Tells every watcher of the env how a pull goes: on PostgreSQL through NOTIFY (every
    /// instance's listener, this one's too, relays it), else in this process. Best effort.
    pub async fn push_pull(&self, p: &PullProgress) {
        if self.postgres {
            let Ok(json) = serde_json::to_string(p) else {
                return;
            };
            let notified = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PULLS_CHANNEL)
                .bind(json)
                .execute(&self.pool)
                .await;
            if let Err(e) = notified {
                tracing::debug!("NOTIFY {PULLS_CHANNEL}: {e}");
            }
        } else {
            let _ = self.pulls.send(p.clone());
        }
    }

    /// Pulls as they progress, of every env.
    pub fn subscribe_pulls(&self) -> tokio::sync::broadcast::Receiver<PullProgress> {
        self.pulls.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn progress(done: u64) -> PullProgress {
        PullProgress {
            env_id: "e1".into(),
            pod: "web".into(),
            image: "registry.lab/shop:x".into(),
            done,
            total: 391,
            layers_done: 0,
            layers: 2,
            finished: false,
        }
    }

    /// A pull pushed by one instance reaches the watchers of this one, and on PostgreSQL
    /// those of every instance on the database (no row written).
    #[tokio::test]
    async fn pull_progress_reaches_watchers_here_and_on_postgres_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("envd.db").display());
        let mut pairs = vec![(Store::open(&url).await.unwrap(), None)];
        if let Some(pg) = super::super::tests::postgres_url() {
            let other = Store::open(&pg).await.unwrap();
            pairs.push((Store::open(&pg).await.unwrap(), Some(other)));
        }
        for (s, other) in pairs {
            let mut rx = s.subscribe_pulls();
            let pusher = other.as_ref().unwrap_or(&s);
            // The listener connects in the background: push until it is heard.
            let heard = async {
                loop {
                    pusher.push_pull(&progress(120)).await;
                    if let Ok(Ok(p)) =
                        tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
                    {
                        return p;
                    }
                }
            };
            let p = tokio::time::timeout(Duration::from_secs(20), heard)
                .await
                .expect("a pushed pull is heard");
            assert_eq!(p, progress(120));
        }
    }
}
