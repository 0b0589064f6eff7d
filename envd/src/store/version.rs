//! Whether anything was written to the store since a given moment, for answers that are
//! worth keeping until then (the env listing). On a SQLite file that is its
//! `data_version`, read on a connection of its own that never writes: SQLite changes it
//! whenever another connection (of this process or another) commits. PostgreSQL has no
//! such number, so there nothing is kept.

use std::sync::Arc;

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::Mutex;

use super::{Store, sqlite_file};
use crate::error::Result;

#[derive(Clone, Default)]
pub(super) struct Version {
    conn: Option<Arc<Mutex<AnyConnection>>>,
}

impl Version {
    /// On a SQLite file (`url` as the pool opened it): its own connection.
    pub(super) async fn open(url: &str) -> Result<Version> {
        if sqlite_file(url).is_none() {
            return Ok(Version::default());
        }
        let conn = AnyConnection::connect(url).await?;
        Ok(Version {
            conn: Some(Arc::new(Mutex::new(conn))),
        })
    }
}

impl Store {
    /// A number that differs from the one read before whenever anything was committed in
    /// between; `None` on a store that has none (PostgreSQL, memory). Read it before what
    /// it guards: whatever is read after it is at least as new.
    pub async fn version(&self) -> Result<Option<i64>> {
        let Some(conn) = &self.version.conn else {
            return Ok(None);
        };
        let mut conn = conn.lock().await;
        let row = sqlx::query("PRAGMA data_version")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Some(row.try_get(0)?))
    }
}
