//! The audit trail: one row per mutating request (who, route, target, outcome, when, from
//! where). Bodies and query strings are never recorded, so no secret reaches it.

use sqlx::Row;

use super::Store;
use crate::error::Result;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// The token's name (`anonymous` without a valid one).
    pub actor: String,
    pub owner: Option<String>,
    pub role: Option<String>,
    pub method: String,
    /// The route's pattern, e.g. `/v1/envs/{id}`.
    pub route: String,
    /// The request's path, e.g. `/v1/envs/shop-1a2b3c4d`.
    pub target: String,
    /// What it made or acted on when the path does not say: a new env's id (create,
    /// clone), the env removed by key, a new token's name.
    pub subject: Option<String>,
    /// The HTTP status answered.
    pub status: i64,
    /// The client's address.
    pub client: String,
}

/// Filters of [`Store::audit`]; empty ones match everything.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub owner: Option<String>,
    pub method: Option<String>,
    /// Part of the target path or the subject, e.g. an env id.
    pub target: Option<String>,
    pub status: Option<i64>,
    pub since: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query("INSERT INTO audit (at, actor, owner, role, method, route, target, subject, status, client) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.owner)
            .bind(&e.role)
            .bind(&e.method)
            .bind(&e.route)
            .bind(&e.target)
            .bind(&e.subject)
            .bind(e.status)
            .bind(&e.client)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let target = f
            .target
            .as_deref()
            .map(|t| format!("%{}%", t.replace(['%', '_'], "")))
            .unwrap_or_default();
        let rows = sqlx::query("SELECT id, at, actor, owner, role, method, route, target, subject, status, client FROM audit WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR owner = $2) AND ($3 = '' OR method = $3) AND ($4 = '' OR target LIKE $4 OR subject LIKE $4) AND ($5 < 0 OR status = $5) AND at >= $6 ORDER BY id DESC LIMIT $7")
            .bind(f.actor.clone().unwrap_or_default())
            .bind(f.owner.clone().unwrap_or_default())
            .bind(f.method.clone().unwrap_or_default())
            .bind(target)
            .bind(f.status.unwrap_or(-1))
            .bind(f.since.unwrap_or(0))
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    owner: r.try_get(3)?,
                    role: r.try_get(4)?,
                    method: r.try_get(5)?,
                    route: r.try_get(6)?,
                    target: r.try_get(7)?,
                    subject: r.try_get(8)?,
                    status: r.try_get(9)?,
                    client: r.try_get(10)?,
                })
            })
            .collect()
    }
}
