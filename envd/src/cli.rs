//! Client verbs: talk to `envd serve` over its API. Exit codes: 0 ok, 1 the env failed,
//! 2 usage or rejected input, 3 server unreachable, 4 other server error.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use envd::api::EnvView;
use envd::lifecycle::{EventKind, State, Step};
use envd::store::Event;

mod auth;
mod catalog;
mod clone;
mod dirs;
mod images;
mod init;
mod pods;
mod pool;
mod templates;

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Create an environment from a template.
    Create(CreateArgs),
    /// Create an environment from a ready one's template and answers (--with-data: and its data).
    Clone(clone::CloneArgs),
    /// List environments.
    Ls {
        #[command(flatten)]
        c: Conn,
        /// Only envs in this state (creating, ready, failed, ...).
        #[arg(long)]
        state: Option<State>,
        #[arg(long)]
        key: Option<String>,
        /// Finished envs (gone, failed) too; by default only live ones.
        #[arg(long)]
        all: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show one environment (by id or name).
    Get {
        #[command(flatten)]
        c: Conn,
        env: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Tear an environment down (logs are archived first).
    Rm {
        #[command(flatten)]
        c: Conn,
        /// id or name
        env: Option<String>,
        /// Remove the live env holding this CI key.
        #[arg(long, conflicts_with = "env")]
        key: Option<String>,
        /// Wait until everything is freed.
        #[arg(long)]
        wait: bool,
    },
    /// Download an environment's log archive (after teardown).
    Logs {
        #[command(flatten)]
        c: Conn,
        env: String,
        #[arg(long, short = 'O', conflicts_with = "follow")]
        output: Option<std::path::PathBuf>,
        /// Follow a running env's pods live instead of fetching the archive.
        #[arg(long, short)]
        follow: bool,
        /// With --follow: past lines of each container to show first.
        #[arg(long, default_value_t = 100)]
        tail: u32,
    },
    /// Show an environment's recorded steps and their timings.
    Events {
        #[command(flatten)]
        c: Conn,
        env: String,
    },
    /// Push an environment's expiry.
    Extend {
        #[command(flatten)]
        c: Conn,
        env: String,
        #[arg(long)]
        ttl: String,
    },
    /// List the scheduled jobs (schedule, next run, last run), or run one now:
    /// `envd jobs run sweep [--dry-run]`.
    Jobs {
        #[command(flatten)]
        c: Conn,
        #[command(subcommand)]
        cmd: Option<JobsCmd>,
    },
    /// List the template catalog; `envd templates import FILE --name N` adds a compose file.
    Templates {
        #[command(flatten)]
        c: Conn,
        #[command(subcommand)]
        cmd: Option<templates::TemplatesCmd>,
    },
    /// Change a ready env's answers: `envd config set ENV POD KEY=VALUE...`.
    Config {
        #[command(subcommand)]
        cmd: pods::ConfigCmd,
    },
    /// Run a command in a pod: `envd exec ENV POD [-c CONTAINER] [-i] [-t] -- CMD...`;
    /// exits with the command's exit code.
    Exec(pods::ExecArgs),
    /// Keep a token for this user: `envd token create ... | envd login` (checks it first).
    Login(auth::LoginArgs),
    /// Show the token in use: name, role, owner.
    Whoami {
        #[command(flatten)]
        c: Conn,
    },
    /// Tokens (admin): `envd token create --name N --role R --owner O [--expires 30d]`,
    /// `envd token ls`, `envd token revoke NAME`.
    Token {
        #[command(flatten)]
        c: Conn,
        #[command(subcommand)]
        cmd: auth::TokenCmd,
    },
    /// Your owner's quota: live envs, CPU, memory, creates per minute, used and allowed.
    Quota {
        #[command(flatten)]
        c: Conn,
        /// Admin: another owner's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// The audit trail of mutating requests (admin), newest first.
    Audit(auth::AuditArgs),
    /// Warm pools (admin): `envd pool set full --min 2 [--max N] [--set K=V]`, `envd pool ls`.
    Pool {
        #[command(flatten)]
        c: Conn,
        #[command(subcommand)]
        cmd: pool::PoolCmd,
    },
    /// Your images for envs without a registry: `envd images push IMAGE...`, `ls`, `rm`.
    Images {
        #[command(flatten)]
        c: Conn,
        #[command(subcommand)]
        cmd: images::ImagesCmd,
    },
    /// A new image into a live env's pod: `envd deploy ENV POD[/CONTAINER] --image REF`
    /// (`--key BRANCH` instead of ENV in CI); the old image comes back if it fails.
    Deploy(images::DeployArgs),
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Run one job now.
    Run {
        /// `reap` (warn envs about to expire, tear down expired ones), `sweep` (free host
        /// objects of no live env) or `retain-logs` (delete old log archives).
        name: String,
        /// Only list what it would act on.
        #[arg(long)]
        dry_run: bool,
        /// sweep: leave objects younger than this alone (default: the server's, 10m).
        #[arg(long)]
        grace: Option<String>,
    },
}

#[derive(Args, Clone)]
pub struct Conn {
    /// envd's API.
    #[arg(
        long,
        env = "ENVD_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    server: String,
    /// Bearer token (default: ENVD_TOKEN, else ~/.config/envd/token from `envd login`,
    /// else for a local envd its <data-dir>/admin-token).
    #[arg(long, env = "ENVD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl Conn {
    /// A request to the server, with the token when there is one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let req = reqwest::Client::new().request(method, url);
        match auth::bearer(self) {
            Some(b) => req.bearer_auth(b.token),
            None => req,
        }
    }
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Dotenv,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    c: Conn,
    /// Template name, or name:version.
    #[arg(long, short)]
    template: String,
    /// Answer a template variable (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    name: Option<String>,
    /// CI key (e.g. the branch): reuses the live env holding it.
    #[arg(long)]
    key: Option<String>,
    /// Replace the live env holding the key.
    #[arg(long, requires = "key")]
    recreate: bool,
    /// Time to live, e.g. 2h.
    #[arg(long)]
    ttl: Option<String>,
    /// Label (repeatable), KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Wait until the env is ready (or failed).
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value = "10m")]
    timeout: String,
    /// Keep a failed env's node for debugging.
    #[arg(long)]
    keep_on_failure: bool,
    /// Init data for a pod's database (repeatable): mysql=seed.sql, mongo=orders.json, redis=keys.redis.
    #[arg(long = "init", value_name = "POD=FILE")]
    init: Vec<String>,
    /// A local directory for a pod's `dirs:` paths (repeatable), e.g. app=./src; packed and
    /// sent with the request (at most 4 MiB compressed in all).
    #[arg(long = "dir", value_name = "POD=DIR")]
    dirs: Vec<String>,
    /// A pod's image over the template's (repeatable): web=registry.lab/shop:feature-x,
    /// or POD/CONTAINER=REF.
    #[arg(long = "image", value_name = "POD=REF")]
    images: Vec<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

enum Fail {
    Usage(String),
    Unreachable(String),
    Server(String),
    EnvFailed(String),
    /// `envd exec`: the command's own non-zero exit code, nothing to print.
    Code(u8),
}

pub async fn run(cmd: ClientCmd) -> ExitCode {
    match run_inner(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Code(code)) => ExitCode::from(code),
        Err(f) => {
            let (code, msg) = match f {
                Fail::EnvFailed(m) => (1, m),
                Fail::Usage(m) => (2, m),
                Fail::Unreachable(m) => (3, m),
                Fail::Server(m) => (4, m),
                Fail::Code(c) => (c, String::new()),
            };
            eprintln!("envd: {msg}");
            ExitCode::from(code)
        }
    }
}

fn pairs(flag: &str, items: &[String]) -> Result<serde_json::Map<String, Value>, Fail> {
    let mut m = serde_json::Map::new();
    for s in items {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Fail::Usage(format!("{flag} {s}: write {flag} KEY=VALUE")))?;
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

async fn call(
    method: reqwest::Method,
    c: &Conn,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), Fail> {
    let mut req = c.request(method, path).timeout(Duration::from_secs(900));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| {
        Fail::Unreachable(format!(
            "cannot reach envd at {} ({e}); start it with scripts/up or set --server/ENVD_URL",
            c.server
        ))
    })?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        let detail = v
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("no detail")
            .to_string();
        let title = v
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string();
        // Several bad fields: one line each, so every one can be fixed in one go.
        let each: Vec<String> = v["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("\n  {}: {}", s(&e["field"]), s(&e["reason"])))
            .collect();
        let mut msg = if each.is_empty() {
            format!("{title}: {detail}")
        } else {
            format!("{title}:{}", each.concat())
        };
        if status == 401 {
            msg.push_str(&auth::unauthorized_hint(c));
        }
        return Err(
            if matches!(status, 400 | 401 | 403 | 404 | 409 | 422 | 429) {
                Fail::Usage(msg)
            } else {
                Fail::Server(msg)
            },
        );
    }
    Ok((status, v))
}

async fn run_inner(cmd: ClientCmd) -> Result<(), Fail> {
    use reqwest::Method;
    match cmd {
        ClientCmd::Clone(a) => clone::run(a).await,
        ClientCmd::Create(a) => {
            let body = json!({
                "template": a.template, "answers": pairs("--set", &a.set)?, "name": a.name, "key": a.key,
                "recreate": a.recreate, "ttl": a.ttl, "labels": pairs("--label", &a.labels)?, "keep_on_failure": a.keep_on_failure,
                "init": init::read(&a.init)?,
                "dirs": dirs::read(&a.dirs)?,
                "images": pairs("--image", &a.images)?,
            });
            let (_, env) = call(Method::POST, &a.c, "/v1/envs", Some(body)).await?;
            settle(&a.c, env, a.wait, &a.timeout, a.output).await
        }
        ClientCmd::Ls {
            c,
            state,
            key,
            all,
            output,
        } => {
            let mut q = vec![];
            if all {
                q.push("all=true".to_string());
            }
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            if let Some(k) = key {
                q.push(format!("key={}", envd::urlencode(&k)));
            }
            let (_, v) = call(Method::GET, &c, &format!("/v1/envs?{}", q.join("&")), None).await?;
            match output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
                }
                _ => {
                    println!(
                        "{:<28} {:<10} {:<15} {:<12} {:<26} EXPIRES",
                        "NAME", "STATE", "NODE_IP", "TEMPLATE", "KEY"
                    );
                    for e in typed::<Vec<EnvView>>(v)? {
                        println!(
                            "{:<28} {:<10} {:<15} {:<12} {:<26} {}",
                            e.name,
                            e.state,
                            e.node_ip.unwrap_or_default(),
                            e.template,
                            e.key.unwrap_or_default(),
                            e.expires_at
                        );
                    }
                }
            }
            Ok(())
        }
        ClientCmd::Get { c, env, output } => {
            let (_, v) = call(
                Method::GET,
                &c,
                &format!("/v1/envs/{}", envd::urlencode(&env)),
                None,
            )
            .await?;
            print_env(&v, output);
            Ok(())
        }
        ClientCmd::Rm { c, env, key, wait } => {
            let path = match (env, key) {
                (Some(e), None) => format!("/v1/envs/{}?wait={wait}", envd::urlencode(&e)),
                (None, Some(k)) => format!("/v1/envs?key={}&wait={wait}", envd::urlencode(&k)),
                _ => {
                    return Err(Fail::Usage(
                        "name the env to remove: envd rm ID|NAME or envd rm --key KEY".into(),
                    ));
                }
            };
            let (_, v) = call(Method::DELETE, &c, &path, None).await?;
            let env: EnvView = typed(v)?;
            println!("{} {}", env.name, env.state);
            Ok(())
        }
        ClientCmd::Logs {
            c,
            env,
            output,
            follow,
            tail,
        } => {
            let path = format!(
                "/v1/envs/{}/logs?follow={follow}&tail={tail}",
                envd::urlencode(&env)
            );
            let resp = c
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .map_err(|e| {
                    Fail::Unreachable(format!("cannot reach envd at {} ({e})", c.server))
                })?;
            if !resp.status().is_success() {
                let unauthorized = resp.status() == reqwest::StatusCode::UNAUTHORIZED;
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                let hint = if unauthorized {
                    auth::unauthorized_hint(&c)
                } else {
                    String::new()
                };
                return Err(Fail::Usage(format!(
                    "{}: {}{hint}",
                    s(&v["title"]),
                    s(&v["detail"])
                )));
            }
            if follow {
                use std::io::Write;
                let mut resp = resp;
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| Fail::Server(e.to_string()))?
                {
                    let mut out = std::io::stdout().lock();
                    if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
                        break; // stdout closed (e.g. piped into head)
                    }
                }
                return Ok(());
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| Fail::Server(e.to_string()))?;
            let path = output.unwrap_or_else(|| format!("{env}.tar.gz").into());
            std::fs::write(&path, &bytes)
                .map_err(|e| Fail::Usage(format!("writing {}: {e}", path.display())))?;
            println!("{} ({} bytes)", path.display(), bytes.len());
            Ok(())
        }
        ClientCmd::Events { c, env } => {
            let (_, v) = call(
                Method::GET,
                &c,
                &format!("/v1/envs/{}/events", envd::urlencode(&env)),
                None,
            )
            .await?;
            for e in typed::<Vec<Event>>(v)? {
                let at = chrono::DateTime::from_timestamp_millis(e.at)
                    .map(|t| t.format("%H:%M:%S%.3f").to_string())
                    .unwrap_or_default();
                let d = e.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default();
                println!("{at}  {:<18} {:>9}  {}", e.step, d, e.message);
            }
            Ok(())
        }
        ClientCmd::Extend { c, env, ttl } => {
            let (_, v) = call(
                Method::POST,
                &c,
                &format!("/v1/envs/{}/extend", envd::urlencode(&env)),
                Some(json!({ "ttl": ttl })),
            )
            .await?;
            println!("{} expires at {}", s(&v["name"]), s(&v["expires_at"]));
            Ok(())
        }
        ClientCmd::Jobs { c, cmd: None } => {
            let (_, v) = call(Method::GET, &c, "/v1/jobs", None).await?;
            println!(
                "{:<12} {:<16} {:<21} {:<21} {:>8} {:>6} {:>6}",
                "JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "TOOK", "FOUND", "FREED"
            );
            for j in v.as_array().cloned().unwrap_or_default() {
                let last = &j["last_run"];
                let found = last["result"]["found"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let (took, nfound, nfreed) = if last.is_null() {
                    ("-".to_string(), "-".to_string(), "-".to_string())
                } else {
                    let took = match (last["started_at"].as_i64(), last["finished_at"].as_i64()) {
                        (Some(a), Some(b)) => format!("{:.2}s", (b - a) as f64 / 1000.0),
                        _ => "running".into(),
                    };
                    let freed = found.iter().filter(|f| f["freed"] == true).count();
                    (took, found.len().to_string(), freed.to_string())
                };
                let last_at = last["started_at"]
                    .as_i64()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<12} {:<16} {:<21} {:<21} {took:>8} {nfound:>6} {nfreed:>6}",
                    s(&j["name"]),
                    s(&j["schedule"]),
                    s(&j["next_run"]).replace('T', " ").trim_end_matches('Z'),
                    last_at
                );
            }
            Ok(())
        }
        ClientCmd::Jobs {
            c,
            cmd:
                Some(JobsCmd::Run {
                    name,
                    dry_run,
                    grace,
                }),
        } => {
            let mut path = format!("/v1/jobs/{}/run?dry_run={dry_run}", envd::urlencode(&name));
            if let Some(g) = grace {
                path.push_str(&format!("&grace={}", envd::urlencode(&g)));
            }
            let (_, v) = call(Method::POST, &c, &path, None).await?;
            let found = v["found"].as_array().cloned().unwrap_or_default();
            for o in &found {
                let what = if o["freed"] == true {
                    "done"
                } else if dry_run {
                    "would do"
                } else {
                    "NOT done"
                };
                println!(
                    "{what:<9} {:<9} {:<40} env {} {}",
                    s(&o["kind"]),
                    s(&o["name"]),
                    s(&o["env_id"]),
                    s(&o["error"])
                );
            }
            println!(
                "{} {name}: {} found in {} ms",
                if dry_run { "dry run of" } else { "ran" },
                found.len(),
                v["duration_ms"]
            );
            Ok(())
        }
        ClientCmd::Config { cmd } => pods::config(cmd).await,
        ClientCmd::Login(a) => auth::login(a).await,
        ClientCmd::Whoami { c } => auth::whoami(&c).await,
        ClientCmd::Token { c, cmd } => auth::token(&c, cmd).await,
        ClientCmd::Quota { c, owner } => auth::quota(&c, owner).await,
        ClientCmd::Audit(a) => auth::audit(a).await,
        ClientCmd::Pool { c, cmd } => pool::run(&c, cmd).await,
        ClientCmd::Exec(a) => pods::exec(a).await,
        ClientCmd::Images { c, cmd } => images::run(&c, cmd).await,
        ClientCmd::Deploy(a) => images::deploy(a).await,
        ClientCmd::Templates { c, cmd: Some(cmd) } => templates::run(&c, cmd).await,
        ClientCmd::Templates { c, cmd: None } => {
            let (_, v) = call(Method::GET, &c, "/v1/templates", None).await?;
            catalog::print(&v);
            Ok(())
        }
    }
}

/// After a create or clone: waits when asked, prints the env, fails when it failed.
async fn settle(
    c: &Conn,
    env: Value,
    wait: bool,
    timeout: &str,
    output: Output,
) -> Result<(), Fail> {
    let env = if wait {
        let view = wait_ready(c, &typed::<EnvView>(env)?, timeout).await?;
        serde_json::to_value(&view).map_err(|e| Fail::Server(e.to_string()))?
    } else {
        env
    };
    print_env(&env, output);
    let view = typed::<EnvView>(env)?;
    if view.state == State::Failed {
        return Err(Fail::EnvFailed(format!(
            "environment {} failed: {}",
            view.name,
            view.error.as_deref().unwrap_or("see `envd events`")
        )));
    }
    Ok(())
}

/// An API answer read as the library's own response type.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Fail> {
    serde_json::from_value(v).map_err(|e| {
        Fail::Server(format!(
            "envd answered something this CLI does not understand ({e}); are both the same version?"
        ))
    })
}

async fn wait_ready(c: &Conn, env: &EnvView, timeout: &str) -> Result<EnvView, Fail> {
    let limit = humantime::parse_duration(timeout)
        .map_err(|e| Fail::Usage(format!("--timeout {timeout}: {e}; write e.g. 5m")))?;
    let t = Instant::now();
    let mut progress = Progress::new(std::io::stderr().is_terminal(), &env.name);
    let mut events = Events::open(c, &env.id).await;
    loop {
        let (_, v) = call(
            reqwest::Method::GET,
            c,
            &format!("/v1/envs/{}", env.id),
            None,
        )
        .await?;
        let v: EnvView = typed(v)?;
        for e in events.fetch(c, &env.id).await? {
            progress.event(t.elapsed(), &e);
        }
        for p in events.pulls.drain(..) {
            progress.pull(t.elapsed(), &p);
        }
        progress.step(t.elapsed(), v.state, v.step);
        if v.state.is_settled() {
            progress.finish();
            eprintln!(
                "{} {} in {:.1}s",
                v.name,
                v.state,
                t.elapsed().as_secs_f64()
            );
            return Ok(v);
        }
        if t.elapsed() > limit {
            progress.finish();
            return Err(Fail::EnvFailed(format!(
                "{} not ready within {timeout} (state {}, step {})",
                v.name, v.state, v.step
            )));
        }
        events.next_change(limit.saturating_sub(t.elapsed())).await;
    }
}

/// The env's events as they are recorded: pushed over the events stream (Server-Sent
/// Events), or, where that cannot be had, fetched every 200 ms.
struct Events {
    stream: Option<futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>>,
    buf: String,
    pending: Vec<Event>,
    seen: i64,
    /// Image pulls as they progress (pushed only: never in the recorded events).
    pulls: Vec<envd::store::PullProgress>,
}

impl Events {
    async fn open(c: &Conn, id: &str) -> Events {
        use futures_util::StreamExt;
        let url = format!("{}/v1/envs/{id}/events", c.server.trim_end_matches('/'));
        let resp = reqwest::Client::new()
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await;
        let stream = match resp {
            Ok(r) if r.status().is_success() => Some(r.bytes_stream().boxed()),
            _ => None,
        };
        Events {
            stream,
            buf: String::new(),
            pending: vec![],
            seen: 0,
            pulls: vec![],
        }
    }

    /// Events not shown yet.
    async fn fetch(&mut self, c: &Conn, id: &str) -> Result<Vec<Event>, Fail> {
        if self.stream.is_none() {
            let (_, v) = call(
                reqwest::Method::GET,
                c,
                &format!("/v1/envs/{id}/events"),
                None,
            )
            .await?;
            self.pending = typed(v)?;
        }
        let seen = self.seen;
        let new: Vec<Event> = self.pending.drain(..).filter(|e| e.id > seen).collect();
        if let Some(last) = new.last() {
            self.seen = last.id;
        }
        Ok(new)
    }

    /// Returns once something was recorded (or after a while: the caller looks anyway).
    async fn next_change(&mut self, within: Duration) {
        use futures_util::StreamExt;
        let Some(stream) = &mut self.stream else {
            tokio::time::sleep(Duration::from_millis(200).min(within)).await;
            return;
        };
        let wait = within.min(Duration::from_secs(5));
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let data = block.lines().find_map(|l| l.strip_prefix("data:"));
                    let kind = block.lines().find_map(|l| l.strip_prefix("event:"));
                    if kind.map(str::trim) == Some("progress") {
                        if let Some(p) = data.and_then(|d| serde_json::from_str(d.trim()).ok()) {
                            self.pulls.push(p);
                        }
                    } else if let Some(e) =
                        data.and_then(|d| serde_json::from_str::<Event>(d.trim()).ok())
                    {
                        self.pending.push(e);
                    }
                }
            }
            // The stream ended (the env is final) or broke: look by asking from now on.
            Ok(None) | Ok(Some(Err(_))) => self.stream = None,
            Err(_) => {}
        }
    }
}

/// `--wait`'s display: on a terminal one line for the env's step and a bar per pod
/// (starting → started → ready); otherwise a plain line per change.
struct Progress {
    name: String,
    multi: Option<indicatif::MultiProgress>,
    env_bar: Option<indicatif::ProgressBar>,
    pods: std::collections::BTreeMap<String, indicatif::ProgressBar>,
    last_step: Option<Step>,
    /// A bar per image being pulled, by `<pod> <image>`.
    pulls: std::collections::BTreeMap<String, indicatif::ProgressBar>,
}

impl Progress {
    fn new(tty: bool, name: &str) -> Self {
        let multi = tty.then(indicatif::MultiProgress::new);
        let env_bar = multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new_spinner());
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Progress {
            name: name.to_string(),
            multi,
            env_bar,
            pods: Default::default(),
            last_step: None,
            pulls: Default::default(),
        }
    }

    fn step(&mut self, at: Duration, state: State, step: Step) {
        if Some(step) == self.last_step {
            return;
        }
        self.last_step = Some(step);
        match &self.env_bar {
            Some(b) => b.set_message(format!("{} {state}: {step}", self.name)),
            None => eprintln!("{:>6.1}s {} {state}: {step}", at.as_secs_f64(), self.name),
        }
    }

    fn event(&mut self, at: Duration, e: &Event) {
        let Some(pod) = &e.pod else {
            return;
        };
        let took = e
            .duration_ms
            .map(|ms| format!(" in {:.2}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let (line, position) = match e.kind {
            EventKind::Started => ("started, waiting until it answers".to_string(), 1),
            EventKind::Ready => (format!("ready ({}{took})", e.message), 2),
            _ => return,
        };
        let Some(multi) = &self.multi else {
            eprintln!("{:>6.1}s   pod {pod}: {line}", at.as_secs_f64());
            return;
        };
        let bar = self.pods.entry(pod.clone()).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new(2));
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("  {prefix:<12} [{bar:10}] {msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(pod.clone());
            b
        });
        bar.set_position(position);
        bar.set_message(line);
    }

    /// `pull <image> [####    ] 120/391 MB` while a node pulls it; without a terminal a
    /// line when it starts and one when it ends.
    fn pull(&mut self, at: Duration, p: &envd::store::PullProgress) {
        let mb = |b: u64| b as f64 / 1e6;
        let amount = format!("{:.0}/{:.0} MB", mb(p.done), mb(p.total));
        let key = format!("{} {}", p.pod, p.image);
        let Some(multi) = &self.multi else {
            if p.finished || !self.pulls.contains_key(&key) {
                let what = if p.finished { "pulled" } else { "pulling" };
                eprintln!(
                    "{:>6.1}s   pull {}: {what} {amount}",
                    at.as_secs_f64(),
                    p.image
                );
                self.pulls.insert(key, indicatif::ProgressBar::hidden());
            }
            return;
        };
        let bar = self.pulls.entry(key).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new(1));
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("  pull {prefix} [{bar:20}] {msg}")
            {
                b.set_style(style.progress_chars("## "));
            }
            b.set_prefix(p.image.clone());
            b
        });
        bar.set_length(p.total.max(1));
        bar.set_position(if p.finished { p.total.max(1) } else { p.done });
        bar.set_message(amount);
        if p.finished {
            bar.finish();
        }
    }

    fn finish(&mut self) {
        for b in self.pods.values().chain(self.pulls.values()) {
            b.finish();
        }
        if let Some(b) = &self.env_bar {
            b.finish_and_clear();
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_env(env: &Value, output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(env).unwrap_or_default()),
        Output::Dotenv => {
            println!("ENV_ID={}", s(&env["id"]));
            println!("ENV_NAME={}", s(&env["name"]));
            println!("NODE_IP={}", s(&env["node_ip"]));
            for (pod, ep) in env["endpoints"].as_object().into_iter().flatten() {
                let var = pod.to_ascii_uppercase().replace('-', "_");
                println!("{var}_URL={}", s(&ep["url"]));
                println!("{var}_HOST={}", s(&ep["host"]));
                println!("{var}_PORT={}", s(&ep["port"]));
            }
        }
        Output::Table => {
            for k in [
                "id",
                "name",
                "key",
                "template",
                "state",
                "step",
                "error",
                "node_ip",
                "created_at",
                "ready_at",
                "expires_at",
            ] {
                if !env[k].is_null() {
                    println!("{k:<11} {}", s(&env[k]));
                }
            }
            for (pod, ep) in env["endpoints"].as_object().into_iter().flatten() {
                println!("{:<11} {}", format!("{pod}:"), s(&ep["url"]));
            }
            // Passwords arrive masked.
            for (k, v) in env["answers"].as_object().into_iter().flatten() {
                println!("{:<11} {k}={}", "answer", s(v));
            }
        }
    }
}
