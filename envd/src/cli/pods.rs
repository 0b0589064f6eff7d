//! `envd config set` and `envd exec`: operations on a ready env's pods.

use std::io::{IsTerminal, Read, Write};

use clap::{Args, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Conn, Fail, call, pairs, s};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Change template answers of a ready env and apply them to one pod: its files are
    /// re-rendered and uploaded, then the pod restarts or gets its signal (`on_change`).
    Set {
        #[command(flatten)]
        c: Conn,
        env: String,
        pod: String,
        /// Answers to change.
        #[arg(value_name = "KEY=VALUE", required = true)]
        answers: Vec<String>,
        /// Return once the change is recorded (its generation), not once it is applied.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    c: Conn,
    env: String,
    pod: String,
    /// Container of the pod (default: its first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Forward stdin to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a TTY (the local terminal goes raw while it runs).
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

pub async fn config(cmd: ConfigCmd) -> Result<(), Fail> {
    let ConfigCmd::Set {
        c,
        env,
        pod,
        answers,
        no_wait,
    } = cmd;
    let body = json!({ "answers": pairs("config set ENV POD", &answers)? });
    let path = format!(
        "/v1/envs/{}/pods/{}?wait={}",
        envd::urlencode(&env),
        envd::urlencode(&pod),
        !no_wait
    );
    let (_, v) = call(reqwest::Method::PATCH, &c, &path, Some(body)).await?;
    if no_wait {
        println!(
            "{env} {}: generation {} {}",
            s(&v["pod"]),
            s(&v["generation"]),
            s(&v["status"])
        );
    } else {
        println!("{env} {}: {}", s(&v["pod"]), s(&v["action"]));
    }
    Ok(())
}

/// Runs the command over the API's WebSocket; the command's exit code becomes envd's.
pub async fn exec(a: ExecArgs) -> Result<(), Fail> {
    let base = a.c.server.trim_end_matches('/');
    let ws_base = match base.split_once("://") {
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => {
            return Err(Fail::Usage(format!(
                "envd exec needs an http:// server URL, not {base}"
            )));
        }
    };
    let mut q = form_urlencoded::Serializer::new(String::new());
    for arg in &a.cmd {
        q.append_pair("cmd", arg);
    }
    if let Some(c) = &a.container {
        q.append_pair("container", c);
    }
    q.append_pair("tty", &a.tty.to_string());
    q.append_pair("stdin", &a.interactive.to_string());
    let url = format!(
        "{ws_base}/v1/envs/{}/pods/{}/exec?{}",
        envd::urlencode(&a.env),
        envd::urlencode(&a.pod),
        q.finish()
    );
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
        .map_err(|e| Fail::Usage(format!("exec URL {url}: {e}")))?;
    if let Some(b) = super::auth::bearer(&a.c) {
        let value = format!("Bearer {}", b.token)
            .parse()
            .map_err(|_| Fail::Usage(format!("the token from {} is not header text", b.from)))?;
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => refused(resp.status().as_u16(), resp.body()),
            other => Fail::Unreachable(format!(
                "cannot reach envd at {} ({other}); start it with scripts/up or set --server/ENVD_URL",
                a.c.server
            )),
        })?;
    let (mut tx, mut rx) = ws.split();
    let _raw = (a.tty && std::io::stdin().is_terminal())
        .then(RawMode::enable)
        .flatten();
    if a.tty
        && let Some((rows, cols)) = console::Term::stdout().size_checked()
    {
        let resize = json!({ "resize": [cols, rows] }).to_string();
        let _ = tx.send(Message::text(resize)).await;
    }
    let mut stdin = a.interactive.then(stdin_reader);
    let mut code = None;
    loop {
        tokio::select! {
            frame = rx.next() => match frame {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    let written = if b[0] == 2 {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&b[1..]).and_then(|_| e.flush())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&b[1..]).and_then(|_| o.flush())
                    };
                    if written.is_err() {
                        break; // our stdout closed (e.g. piped into head)
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if let Some(c) = v["exit_code"].as_i64() {
                        code = Some(c);
                    } else if let Some(e) = v["error"].as_str() {
                        return Err(Fail::Server(format!("exec: {e}")));
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => return Err(Fail::Server(format!("exec session: {e}"))),
                Some(Ok(_)) => {}
            },
            data = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => {
                let msg = match data {
                    Some(bytes) => Message::binary(bytes),
                    None => {
                        stdin = None;
                        Message::text(json!({ "eof": true }).to_string())
                    }
                };
                if tx.send(msg).await.is_err() {
                    stdin = None;
                }
            }
        }
    }
    match code {
        Some(0) => Ok(()),
        Some(c) => Err(Fail::Code(u8::try_from(c).unwrap_or(1))),
        None => Err(Fail::Server(
            "the exec session ended without the command's exit code".into(),
        )),
    }
}

/// A refused upgrade: the API's problem, with the CLI's exit code for its status.
fn refused(status: u16, body: &Option<Vec<u8>>) -> Fail {
    let v: Value = body
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let msg = format!("{}: {}", s(&v["title"]), s(&v["detail"]));
    if matches!(status, 400 | 401 | 403 | 404 | 409 | 422) {
        Fail::Usage(msg)
    } else {
        Fail::Server(msg)
    }
}

/// Stdin read on a plain thread: a blocking read cannot be cancelled, and a tokio
/// blocking task would hold the runtime's shutdown until the user pressed a key.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut input = std::io::stdin();
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break, // dropping tx tells the session stdin ended
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// The local terminal in raw mode (keys go to the remote TTY as typed) until dropped.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enable() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}
