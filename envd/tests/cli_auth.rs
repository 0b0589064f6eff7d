//! Tokens through the real `envd` binary: `token create`, `login` (the token file), whoami,
//! a forbidden verb, `token revoke` and the revoked token's 401 telling what to do, the
//! local admin token fallback, `quota` and `audit`. Slice 248 (no env is built).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::AsyncWriteExt;

mod common;
use common::envd;

/// `envd ARGS` as a user whose home is `home`, with no ENVD_TOKEN, the local serve's
/// data dir `data`, and `stdin` fed in.
async fn as_user(
    server: &str,
    home: &Path,
    data: &Path,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut child = tokio::process::Command::new(common::envd_bin())
        .args(args)
        .env("ENVD_URL", server)
        .env_remove("ENVD_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home)
        .env("ENVD_DATA_DIR", data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_token_create_revoke_and_what_a_revoked_token_is_told() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine(dir.path(), 248).await;
    let server = common::http::serve_engine(engine).await;
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let user = |args: &'static [&'static str], stdin: &'static str| {
        let (server, home, data) = (
            server.clone(),
            home.path().to_path_buf(),
            data.path().to_path_buf(),
        );
        async move { as_user(&server, &home, &data, args, stdin).await }
    };

    // Nothing anywhere: 401 saying where the CLI looked.
    let (code, _, err) = user(&["ls"], "").await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Unauthorized") && err.contains("envd login"),
        "{err}"
    );
    assert!(
        err.contains("no token found") && err.contains("admin-token"),
        "{err}"
    );

    // The admin makes a token; it is printed once, alone on stdout.
    let (code, token, err) = envd(
        &server,
        &[
            "token",
            "create",
            "--name",
            "alice",
            "--role",
            "user",
            "--owner",
            "team-a",
            "--expires",
            "30d",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("envd_") && token.len() == 69, "{token}");
    assert!(
        err.contains("shown once") && err.contains("team-a"),
        "{err}"
    );

    // alice logs in: the token is checked, then kept 0600 in ~/.config/envd/token.
    let stdin: &'static str = Box::leak(format!("{token}\n").into_boxed_str());
    let (code, out, err) = user(&["login"], stdin).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("as alice (role user, owner team-a)"), "{out}");
    let file = home.path().join(".config/envd/token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, _, err) = user(&["login"], "envd_0000\n").await;
    assert_eq!(code, 2, "a bad token is refused: {err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        token,
        "kept the good one"
    );
    let (code, out, err) = user(&["whoami"], "").await;
    assert_eq!(
        (code, out.trim()),
        (0, "alice (role user, owner team-a)"),
        "{err}"
    );
    let (code, _, err) = user(&["ls"], "").await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = user(&["token", "ls"], "").await;
    assert_eq!(code, 2);
    assert!(err.contains("role `user` may not GET /v1/tokens"), "{err}");

    let (code, out, _) = envd(&server, &["token", "ls"]).await;
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(line.contains("user") && line.contains("team-a"), "{line}");
    assert!(!out.contains(&token), "token ls shows no token");

    // Revoked: the next call is told why and what to do.
    let (code, out, err) = envd(&server, &["token", "revoke", "alice"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "revoked alice (owner team-a)"),
        "{err}"
    );
    let (code, _, err) = user(&["ls"], "").await;
    assert_eq!(code, 2);
    assert!(err.contains("token `alice` was revoked"), "{err}");
    assert!(
        err.contains("envd token create") && err.contains("envd login"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the token came from {}", file.display())),
        "{err}"
    );

    // On the envd host, root's CLI finds serve's admin token with no step at all.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(
        data.path().join("admin-token"),
        format!("{}\n", common::http::admin_token()),
    )
    .unwrap();
    let (code, out, err) = user(&["whoami"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("role admin"), "{out}");
    let (code, out, err) = user(&["quota"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("owner admin") && out.contains("max_envs"),
        "{out}"
    );
    let (code, out, err) = user(&["audit", "--method", "delete"], "").await;
    assert_eq!(code, 0, "{err}");
    let revoke = out
        .lines()
        .find(|l| l.contains("/v1/tokens/alice"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        revoke.contains("DELETE") && revoke.contains(" 200 "),
        "{revoke}"
    );
    assert!(!out.contains(&token), "no token in the audit trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_serve_makes_the_admin_token_the_cli_on_its_host_uses() {
    use common::serve::{Serve, free_port};
    if !common::engine_available().await {
        return;
    }
    // --no-auth only on loopback.
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = std::process::Command::new(common::envd_bin())
        .args(["serve", "--no-auth", "--listen", &format!("0.0.0.0:{port}")])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-auth is refused"), "{err}");

    let args = ["--bridge", "envdh14", "--pool-cidr", "10.219.14.0/24"];
    let mut serve = Serve::spawn(data.path(), port, &args, None);
    let server = format!("http://127.0.0.1:{port}");
    serve.up().await;
    let file = data.path().join("admin-token");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = as_user(&server, home.path(), data.path(), &["whoami"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("role admin, owner admin"), "{out}");
    let guard = common::Guard::default();
    let (code, out, err) = as_user(
        &server,
        home.path(),
        data.path(),
        &["create", "-t", "minimal", "--wait", "-o", "dotenv"],
        "",
    )
    .await;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("ENV_ID="))
        .unwrap_or_default()
        .to_string();
    guard.watch(&id);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = as_user(
        &server,
        home.path(),
        data.path(),
        &["rm", &id, "--wait"],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    // Without the token file the same request is refused.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = as_user(&server, home.path(), empty.path(), &["ls"], "").await;
    assert_eq!(code, 2, "{err}");
    drop(serve);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "envdh14"])
        .status();
}
