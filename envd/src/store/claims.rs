//! Env claims: one envd instance acts on an env at a time. A claim is taken or renewed
//! by its holder, or taken over once it expired (its holder died); it is dropped when the
//! holder's loop for the env ends.

use super::{Store, is_unique_violation, now_ms};
use crate::error::Result;

impl Store {
    /// Takes or renews the claim of `holder` on env `id` for `ttl_ms`; false while another
    /// holder's claim has not expired.
    pub async fn claim(&self, id: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let renewed = sqlx::query(
            "UPDATE claims SET holder = $2, expires_at = $3 WHERE env_id = $1 AND (holder = $2 OR expires_at < $4)",
        )
        .bind(id)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if renewed.rows_affected() == 1 {
            return Ok(true);
        }
        let taken =
            sqlx::query("INSERT INTO claims (env_id, holder, expires_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(holder)
                .bind(now + ttl_ms)
                .execute(&self.pool)
                .await;
        match taken {
            Ok(_) => Ok(true),
            // Another holder's live claim (or one taken just now).
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Lets go of `holder`'s claim on env `id` (nothing if another holds it).
    pub async fn release_claim(&self, id: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM claims WHERE env_id = $1 AND holder = $2")
            .bind(id)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds env `id` now, if anyone (an expired claim counts as none).
    pub async fn claim_holder(&self, id: &str) -> Result<Option<String>> {
        use sqlx::Row;
        let row = sqlx::query("SELECT holder FROM claims WHERE env_id = $1 AND expires_at >= $2")
            .bind(id)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Envs whose claim expired without being let go: their holder died mid-work.
    pub async fn expired_claims(&self) -> Result<Vec<String>> {
        use sqlx::Row;
        let rows = sqlx::query("SELECT env_id FROM claims WHERE expires_at < $1")
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?)
    }
}
