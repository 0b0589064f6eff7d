//! Bearer tokens: only their SHA-256 is stored; the token itself is shown once.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, is_unique_violation, now_ms};
use crate::error::{Error, Result};

/// A token as recorded (never the token itself).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub owner: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(skip)]
    pub hash: String,
}

pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub hash: &'a str,
    pub role: &'a str,
    pub owner: &'a str,
    pub expires_at: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, name, hash, role, owner, created_at, expires_at, last_used_at, revoked_at"
    };
}

fn token_from_row(r: &AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hash: r.try_get("hash")?,
        role: r.try_get("role")?,
        owner: r.try_get("owner")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Records a token; a live token already holding the name is a conflict.
    pub async fn insert_token(&self, t: &NewToken<'_>) -> Result<TokenRow> {
        let res = sqlx::query("INSERT INTO tokens (id, name, hash, role, owner, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(t.id)
            .bind(t.name)
            .bind(t.hash)
            .bind(t.role)
            .bind(t.owner)
            .bind(now_ms())
            .bind(t.expires_at)
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => self
                .token_by_hash(t.hash)
                .await?
                .ok_or_else(|| Error::NotFound(format!("token `{}`", t.name))),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict(format!(
                "a token named `{}` exists; revoke it first or choose another name",
                t.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tokens WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tokens ORDER BY created_at DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes the token of this id, or the live one of this name.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<TokenRow> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM tokens WHERE id = $1 OR (name = $1 AND revoked_at IS NULL) ORDER BY (CASE WHEN id = $1 THEN 0 ELSE 1 END) LIMIT 1"))
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        let t = match row {
            Some(r) => token_from_row(&r)?,
            None => return Err(Error::NotFound(format!("token `{id_or_name}`"))),
        };
        sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(&t.id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        let mut rows = self.tokens().await?;
        rows.retain(|r| r.id == t.id);
        rows.pop()
            .ok_or_else(|| Error::NotFound(format!("token `{id_or_name}`")))
    }

    pub async fn touch_token(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
