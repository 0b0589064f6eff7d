use super::origin::allowed;
use super::token::looks_like_token;
use super::*;

#[test]
fn tokens_are_256_random_bits_and_only_their_hash_is_kept() {
    let a = new_token();
    let b = new_token();
    assert_ne!(a, b);
    assert!(looks_like_token(&a), "{a}");
    assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
    assert_eq!(hash(&a).len(), 64);
    assert_ne!(hash(&a), hash(&b));
    assert!(!hash(&a).contains(&a[TOKEN_PREFIX.len()..]));
    assert!(!looks_like_token("envd_xyz"));
}

#[test]
fn roles_parse_and_name_the_choices_when_wrong() {
    for r in Role::ALL {
        assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
    }
    let e = "root".parse::<Role>().unwrap_err().to_string();
    assert!(e.contains("viewer, user, ci or admin"), "{e}");
}

#[test]
fn every_route_has_one_rule_and_exec_is_not_for_ci() {
    for (i, a) in RULES.iter().enumerate() {
        for b in &RULES[i + 1..] {
            assert!(
                !(a.method == b.method && a.path == b.path),
                "two rules for {} {}",
                a.method,
                a.path
            );
        }
    }
    let exec = rules::find(&Method::POST, "/v1/envs/{id}/pods/{pod}/exec").unwrap();
    assert!(!rules::roles(exec).contains(&Role::Ci));
    assert!(rules::roles(exec).contains(&Role::User));
    let head = rules::find(&Method::HEAD, "/v1/envs").unwrap();
    assert_eq!(head.method, "GET");
    assert!(rules::find(&Method::PUT, "/v1/envs").is_none());
}

#[test]
fn the_openapi_document_and_the_rules_name_the_same_routes() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(crate::api::ApiDoc::openapi()).unwrap();
    let mut documented = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
            let op = &item[method];
            assert!(
                op["x-envd-roles"].is_array(),
                "{method} {path} has no x-envd-roles"
            );
        }
    }
    for r in RULES {
        assert!(
            documented.contains(&(r.method.to_string(), r.path.to_string())),
            "rule {} {} is not in /openapi.json",
            r.method,
            r.path
        );
    }
    assert_eq!(documented.len(), RULES.len(), "{documented:?}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn an_origin_must_be_envds_own_by_ip_or_listed() {
    let none: Vec<String> = vec![];
    assert!(allowed(
        "http://127.0.0.1:7070",
        Some("127.0.0.1:7070"),
        &none
    ));
    assert!(allowed(
        "http://localhost:7070",
        Some("localhost:7070"),
        &none
    ));
    assert!(allowed("http://[::1]:7070", Some("[::1]:7070"), &none));
    assert!(allowed(
        "http://10.0.0.5:7070",
        Some("10.0.0.5:7070"),
        &none
    ));
    // Another site, or a name that could be rebound to this address.
    assert!(!allowed(
        "http://evil.example",
        Some("127.0.0.1:7070"),
        &none
    ));
    assert!(!allowed(
        "http://evil.example:7070",
        Some("evil.example:7070"),
        &none
    ));
    assert!(!allowed("null", Some("127.0.0.1:7070"), &none));
    assert!(!allowed("http://127.0.0.1:7070", None, &none));
    let lab = vec!["http://envd.lab:7070/".to_string()];
    assert!(allowed("http://envd.lab:7070", Some("envd.lab:7070"), &lab));
    assert!(allowed("http://ENVD.lab:7070", Some("10.0.0.5:7070"), &lab));
}

#[test]
fn names_and_owners_are_short_plain_words() {
    assert!(check_label("owner", "team-a").is_ok());
    assert!(check_label("name", "ci@shop.x_1").is_ok());
    for bad in ["", "a b", "a/b", &"x".repeat(65)] {
        let e = check_label("owner", bad).unwrap_err().to_string();
        assert!(e.contains("owner"), "{e}");
    }
}

#[tokio::test]
async fn the_admin_token_file_is_made_once_0600_and_known_to_a_new_store() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .await
        .unwrap();
    let (path, made) = bootstrap_admin(&store, dir.path()).await.unwrap();
    assert!(made);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    let row = store.token_by_hash(&hash(&token)).await.unwrap().unwrap();
    assert_eq!((row.role.as_str(), row.owner.as_str()), ("admin", "admin"));
    // A restart keeps the file; a fresh store learns it from the file.
    let (_, made) = bootstrap_admin(&store, dir.path()).await.unwrap();
    assert!(!made);
    assert_eq!(store.tokens().await.unwrap().len(), 1);
    let other = Store::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
        .await
        .unwrap();
    bootstrap_admin(&other, dir.path()).await.unwrap();
    assert!(other.token_by_hash(&hash(&token)).await.unwrap().is_some());
    // A file that is not a token stops the start with the file named.
    std::fs::write(&path, "hello\n").unwrap();
    let e = bootstrap_admin(&store, dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin-token"), "{e}");
}

#[tokio::test]
async fn two_envd_with_one_token_file_start_at_once_on_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let token = super::token::new_token();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("admin-token"), format!("{token}\n")).unwrap();
    }
    for i in 0..20 {
        let db = dir.path().join(format!("{i}.db"));
        let store = Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(bootstrap_admin(&store, &a), bootstrap_admin(&store, &b));
        ra.unwrap();
        rb.unwrap();
        assert_eq!(store.tokens().await.unwrap().len(), 1);
    }
}

#[test]
fn the_readme_role_matrix_is_the_rule_table() {
    let readme = include_str!("../../../README.md");
    let mut rows = 0;
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some((method, path)) = cells[1].trim_matches('`').split_once(' ') else {
            continue;
        };
        let Some(rule) = RULES.iter().find(|r| r.method == method && r.path == path) else {
            continue;
        };
        let want: Vec<bool> = Role::ALL
            .iter()
            .map(|r| rules::roles(rule).contains(r))
            .collect();
        let shown: Vec<bool> = cells[2..6].iter().map(|c| *c == "✓").collect();
        assert_eq!(shown, want, "README row {line}");
        rows += 1;
    }
    assert_eq!(rows, RULES.len(), "every rule has its README row");
}
