//! A PostgreSQL database of a test's own, on ENVD_TEST_POSTGRES_URL's server (tests that
//! run several envd on one database).

/// A database made for one test, dropped by [`OwnDatabase::drop`].
pub struct OwnDatabase {
    pub url: String,
    name: String,
    admin: sqlx::PgPool,
}

impl OwnDatabase {
    pub async fn drop(self) {
        let q = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

/// A fresh database named `<prefix>_<pid>`; None (a failure under CI=true) when no
/// server is given.
pub async fn own_database(prefix: &str) -> Option<OwnDatabase> {
    let Ok(pg) = std::env::var("ENVD_TEST_POSTGRES_URL") else {
        assert!(
            !super::in_ci(),
            "CI=true but ENVD_TEST_POSTGRES_URL is not set: run through scripts/test"
        );
        eprintln!("skipped: ENVD_TEST_POSTGRES_URL unset");
        return None;
    };
    let name = format!("{prefix}_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&pg).await.unwrap();
    for q in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&admin)
            .await
            .unwrap();
    }
    let url = format!("{}/{name}", pg.rsplit_once('/').unwrap().0);
    Some(OwnDatabase { url, name, admin })
}
