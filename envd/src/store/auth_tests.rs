//! Tokens, the audit trail, per-owner keys and quota counts, on SQLite and (when
//! `ENVD_TEST_POSTGRES_URL` is set) PostgreSQL.

use super::*;

async fn stores() -> Vec<(Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("envd.db").display());
    let mut out = vec![(Store::open(&url).await.unwrap(), dir)];
    if let Some(pg) = super::tests::postgres_url() {
        out.push((
            Store::open(&pg).await.unwrap(),
            tempfile::tempdir().unwrap(),
        ));
    }
    out
}

fn env_of(owner: &str, key: Option<&str>) -> NewEnv {
    let id = uuid::Uuid::now_v7().to_string();
    NewEnv {
        name: format!("auth-{}", short_id(&id)),
        id,
        key: key.map(String::from),
        owner: owner.into(),
        template: "minimal".into(),
        template_src: "name: minimal".into(),
        answers: Default::default(),
        labels: Default::default(),
        keep_on_failure: false,
        expires_at: now_ms() + 3_600_000,
        init: Default::default(),
        clone_of: None,
        with_data: false,
    }
}

#[tokio::test]
async fn tokens_are_found_by_hash_named_once_and_revoked() {
    for (s, _d) in stores().await {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("t-{tag}");
        let t = NewToken {
            id: &tag,
            name: &name,
            hash: &format!("h-{tag}"),
            role: "user",
            owner: "qa",
            expires_at: Some(now_ms() + 1000),
        };
        let row = s.insert_token(&t).await.unwrap();
        assert_eq!((row.role.as_str(), row.revoked_at), ("user", None));
        let again = NewToken {
            id: "other",
            hash: "other-hash",
            ..t
        };
        assert!(matches!(
            s.insert_token(&again).await,
            Err(Error::Conflict(_))
        ));
        s.touch_token(&tag, 42).await.unwrap();
        let found = s.token_by_hash(&format!("h-{tag}")).await.unwrap().unwrap();
        assert_eq!(found.last_used_at, Some(42));
        let revoked = s.revoke_token(&name).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        // The name is free again; the revoked token stays listed.
        let (id2, hash2) = (format!("{tag}-2"), format!("h2-{tag}"));
        let fresh = NewToken {
            id: &id2,
            hash: &hash2,
            ..t
        };
        s.insert_token(&fresh).await.unwrap();
        let named: Vec<_> = s
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.name == name)
            .collect();
        assert_eq!(named.len(), 2);
        assert!(matches!(
            s.revoke_token("nope-token").await,
            Err(Error::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn keys_are_per_owner_and_quota_counts_live_envs() {
    for (s, _d) in stores().await {
        let key = format!("k-{}", uuid::Uuid::now_v7());
        let owner_a = format!("a-{key}");
        let owner_b = format!("b-{key}");
        let Created::New(a) = s.create_env(env_of(&owner_a, Some(&key))).await.unwrap() else {
            panic!("new")
        };
        let Created::New(b) = s.create_env(env_of(&owner_b, Some(&key))).await.unwrap() else {
            panic!("another owner's key is its own")
        };
        assert_ne!(a.id, b.id);
        assert!(matches!(
            s.create_env(env_of(&owner_a, Some(&key))).await.unwrap(),
            Created::Existing(e) if e.id == a.id
        ));
        assert!(s.get_scoped(&a.id, Some(&owner_b)).await.is_err());
        assert_eq!(
            s.get_scoped(&a.name, Some(&owner_a)).await.unwrap().id,
            a.id
        );
        assert_eq!(s.live_of(&owner_a).await.unwrap().len(), 1);
        assert_eq!(
            s.created_since(&owner_a, now_ms() - 60_000).await.unwrap(),
            1
        );
        s.request_teardown(&a.id).await.unwrap();
        assert!(
            s.live_of(&owner_a).await.unwrap().is_empty(),
            "being removed: not counted"
        );
    }
}

#[tokio::test]
async fn the_audit_trail_filters() {
    for (s, _d) in stores().await {
        let actor = format!("actor-{}", uuid::Uuid::now_v7());
        for (method, status) in [("POST", 201), ("DELETE", 404), ("POST", 401)] {
            s.record_audit(&AuditEntry {
                id: 0,
                at: now_ms(),
                actor: actor.clone(),
                owner: Some("qa".into()),
                role: Some("user".into()),
                method: method.into(),
                route: "/v1/envs".into(),
                target: "/v1/envs".into(),
                subject: Some(format!("env-{actor}")),
                status,
                client: "127.0.0.1:1".into(),
            })
            .await
            .unwrap();
        }
        let f = |method: Option<&str>, status: Option<i64>| AuditFilter {
            actor: Some(actor.clone()),
            method: method.map(String::from),
            status,
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.audit(&f(None, None)).await.unwrap().len(), 3);
        assert_eq!(s.audit(&f(Some("POST"), None)).await.unwrap().len(), 2);
        let one = s.audit(&f(Some("POST"), Some(401))).await.unwrap();
        assert_eq!((one.len(), one[0].status), (1, 401));
        let by_target = AuditFilter {
            target: Some(actor.clone()),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.audit(&by_target).await.unwrap().len(), 3);
        let later = AuditFilter {
            since: Some(now_ms() + 60_000),
            ..f(None, None)
        };
        assert!(s.audit(&later).await.unwrap().is_empty());
    }
}
