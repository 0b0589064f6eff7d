//! Tokens on the client side: where the CLI finds one, `envd login`, `envd token
//! create|ls|revoke`, `envd whoami`, `envd quota` and `envd audit`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Conn, Fail, call, s};

/// The token of a request and where it came from (for messages).
pub struct Bearer {
    pub token: String,
    pub from: String,
}

/// `~/.config/envd/token` (or under `$XDG_CONFIG_HOME`), written by `envd login`.
fn token_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("envd").join("token"))
}

/// The admin token of an `envd serve` on this host (readable by root): its data dir is
/// ENVD_DATA_DIR or serve's default.
fn local_admin_file() -> PathBuf {
    std::env::var_os("ENVD_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/envd"))
        .join("admin-token")
}

fn read_token(path: &std::path::Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?.trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// Loopback servers only get the local admin token: it must never go to another host.
fn is_local(server: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(server) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// ENVD_TOKEN (or --token), else the `envd login` file, else (for a server on this host)
/// the local serve's admin token.
pub fn bearer(c: &Conn) -> Option<Bearer> {
    if let Some(t) = c.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return Some(Bearer {
            token: t.to_string(),
            from: "ENVD_TOKEN (or --token)".into(),
        });
    }
    if let Some(f) = token_file()
        && let Some(t) = read_token(&f)
    {
        return Some(Bearer {
            token: t,
            from: f.display().to_string(),
        });
    }
    if is_local(&c.server) {
        let f = local_admin_file();
        if let Some(t) = read_token(&f) {
            return Some(Bearer {
                token: t,
                from: f.display().to_string(),
            });
        }
    }
    None
}

/// The line after a 401: where the token came from, or that there was none.
pub fn unauthorized_hint(c: &Conn) -> String {
    match bearer(c) {
        Some(b) => format!("\n(the token came from {})", b.from),
        None => format!(
            "\n(no token found: ENVD_TOKEN, {}{})",
            token_file().map_or("~/.config/envd/token".into(), |f| f.display().to_string()),
            if is_local(&c.server) {
                format!(" and {} were empty", local_admin_file().display())
            } else {
                " were empty".into()
            }
        ),
    }
}

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    c: Conn,
    /// Read the token from this file instead of stdin ("-" for stdin).
    #[arg(long, default_value = "-")]
    token_file: String,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a token and print it (once: only its hash is kept).
    Create {
        #[arg(long)]
        name: String,
        /// viewer, user, ci or admin.
        #[arg(long)]
        role: String,
        /// The team or person whose envs it acts on.
        #[arg(long)]
        owner: String,
        /// e.g. 30d; default: never expires.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    Ls,
    /// Revoke a token by name or id.
    Revoke { name: String },
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    c: Conn,
    /// A token's name.
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    method: Option<String>,
    /// Part of the path, e.g. an env id.
    #[arg(long)]
    target: Option<String>,
    #[arg(long)]
    status: Option<u16>,
    /// e.g. 1h, or 2026-01-31T10:00:00Z.
    #[arg(long)]
    since: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// `envd login`: checks the token with the server, then keeps it in the token file (0600).
pub async fn login(a: LoginArgs) -> Result<(), Fail> {
    let token = if a.token_file == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("paste the token (from `envd token create`), then Enter:");
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Fail::Usage(format!("reading the token from stdin: {e}")))?;
        line
    } else {
        std::fs::read_to_string(&a.token_file)
            .map_err(|e| Fail::Usage(format!("reading {}: {e}", a.token_file)))?
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Fail::Usage(
            "no token given; pipe one in or pass --token-file".into(),
        ));
    }
    let c = Conn {
        server: a.c.server.clone(),
        token: Some(token.clone()),
    };
    let (_, me) = call(reqwest::Method::GET, &c, "/v1/whoami", None).await?;
    let path = token_file()
        .ok_or_else(|| Fail::Usage("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    write_private(&path, &token)?;
    println!(
        "logged in to {} as {} (role {}, owner {}); token kept in {}",
        c.server,
        s(&me["name"]),
        s(&me["role"]),
        s(&me["owner"]),
        path.display()
    );
    Ok(())
}

fn write_private(path: &std::path::Path, token: &str) -> Result<(), Fail> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| Fail::Usage(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(fail)
}

fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn token(c: &Conn, cmd: TokenCmd) -> Result<(), Fail> {
    use reqwest::Method;
    match cmd {
        TokenCmd::Create {
            name,
            role,
            owner,
            expires,
        } => {
            let body = json!({ "name": name, "role": role, "owner": owner, "expires": expires });
            let (_, v) = call(Method::POST, c, "/v1/tokens", Some(body)).await?;
            println!("{}", s(&v["token"]));
            eprintln!(
                "token {} (role {}, owner {}, expires {}): shown once; give it to its holder for `envd login`",
                s(&v["name"]),
                s(&v["role"]),
                s(&v["owner"]),
                if v["expires_at"].is_null() {
                    "never".into()
                } else {
                    when(&v["expires_at"])
                }
            );
        }
        TokenCmd::Ls => {
            let (_, v) = call(Method::GET, c, "/v1/tokens", None).await?;
            println!(
                "{:<24} {:<7} {:<16} {:<20} {:<20} {:<20} REVOKED",
                "NAME", "ROLE", "OWNER", "CREATED", "EXPIRES", "LAST USED"
            );
            for t in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<7} {:<16} {:<20} {:<20} {:<20} {}",
                    s(&t["name"]),
                    s(&t["role"]),
                    s(&t["owner"]),
                    when(&t["created_at"]),
                    when(&t["expires_at"]),
                    when(&t["last_used_at"]),
                    when(&t["revoked_at"])
                );
            }
        }
        TokenCmd::Revoke { name } => {
            let path = format!("/v1/tokens/{}", envd::urlencode(&name));
            let (_, v) = call(Method::DELETE, c, &path, None).await?;
            println!("revoked {} (owner {})", s(&v["name"]), s(&v["owner"]));
        }
    }
    Ok(())
}

pub async fn whoami(c: &Conn) -> Result<(), Fail> {
    let (_, v) = call(reqwest::Method::GET, c, "/v1/whoami", None).await?;
    println!(
        "{} (role {}, owner {})",
        s(&v["name"]),
        s(&v["role"]),
        s(&v["owner"])
    );
    Ok(())
}

pub async fn quota(c: &Conn, owner: Option<String>) -> Result<(), Fail> {
    let path = match owner {
        Some(o) => format!("/v1/quota?owner={}", envd::urlencode(&o)),
        None => "/v1/quota".into(),
    };
    let (_, v) = call(reqwest::Method::GET, c, &path, None).await?;
    let (u, l) = (&v["usage"], &v["limit"]);
    let gib = |b: &Value| format!("{:.2}g", b.as_f64().unwrap_or(0.0) / f64::from(1u32 << 30));
    println!("owner {}", s(&v["owner"]));
    println!("{:<20} {:>10} {:>10}", "QUOTA", "USED", "LIMIT");
    println!(
        "{:<20} {:>10} {:>10}",
        "max_envs",
        s(&u["envs"]),
        s(&l["max_envs"])
    );
    println!(
        "{:<20} {:>10} {:>10}",
        "max_cpus",
        s(&u["cpus"]),
        s(&l["max_cpus"])
    );
    println!(
        "{:<20} {:>10} {:>10}",
        "max_memory",
        gib(&u["memory"]),
        gib(&l["max_memory"])
    );
    println!(
        "{:<20} {:>10} {:>10}",
        "creates_per_minute",
        s(&u["creates_last_minute"]),
        s(&l["creates_per_minute"])
    );
    Ok(())
}

pub async fn audit(a: AuditArgs) -> Result<(), Fail> {
    let mut q = vec![format!("limit={}", a.limit)];
    for (k, v) in [
        ("actor", a.actor),
        ("owner", a.owner),
        ("method", a.method),
        ("target", a.target),
        ("status", a.status.map(|s| s.to_string())),
        ("since", a.since),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", envd::urlencode(&v)));
        }
    }
    let (_, v) = call(
        reqwest::Method::GET,
        &a.c,
        &format!("/v1/audit?{}", q.join("&")),
        None,
    )
    .await?;
    println!(
        "{:<20} {:<20} {:<12} {:<7} {:<48} {:>6} {:<22} SUBJECT",
        "AT", "ACTOR", "OWNER", "METHOD", "TARGET", "STATUS", "CLIENT"
    );
    for e in v.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<20} {:<12} {:<7} {:<48} {:>6} {:<22} {}",
            when(&e["at"]),
            s(&e["actor"]),
            s(&e["owner"]),
            s(&e["method"]),
            s(&e["target"]),
            s(&e["status"]),
            s(&e["client"]),
            s(&e["subject"])
        );
    }
    Ok(())
}
