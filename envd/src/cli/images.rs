//! `envd images push|ls|rm` (the user's images, uploaded to envd) and `envd deploy`
//! (a new image into a live env's pod).

use std::time::Instant;

use clap::{Args, Subcommand};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::{Conn, Fail, call, s};

#[derive(Subcommand)]
pub enum ImagesCmd {
    /// Upload images for your envs: from the local Docker engine (`docker save`), or a
    /// `docker save` archive with --file (`-` reads stdin). Envs then name them as saved.
    Push {
        /// Images of the local engine, e.g. shop:feature-x.
        images: Vec<String>,
        /// A `docker save` archive instead (`-`: stdin).
        #[arg(long, short, conflicts_with = "images")]
        file: Option<String>,
    },
    /// Your uploaded images (an admin sees every owner's).
    Ls,
    /// Forget uploaded images, by name or id; running envs keep what they have.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

pub async fn run(c: &Conn, cmd: ImagesCmd) -> Result<(), Fail> {
    match cmd {
        ImagesCmd::Push { images, file } => push(c, images, file).await,
        ImagesCmd::Ls => {
            let (_, v) = call(reqwest::Method::GET, c, "/v1/images", None).await?;
            println!("{:<12} {:<40} {:>10}  DIGEST", "OWNER", "IMAGE", "MB");
            for i in v.as_array().into_iter().flatten() {
                println!(
                    "{:<12} {:<40} {:>10.1}  {}",
                    s(&i["owner"]),
                    s(&i["ref"]),
                    i["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                    s(&i["digest"])
                );
            }
            Ok(())
        }
        ImagesCmd::Rm { images } => {
            let (_, v) = call(reqwest::Method::GET, c, "/v1/images", None).await?;
            for name in images {
                let canonical = if name.contains(':') {
                    name.clone()
                } else {
                    format!("{name}:latest")
                };
                let found = v.as_array().into_iter().flatten().find(|i| {
                    i["id"] == json!(name)
                        || i["ref"] == json!(name)
                        || i["ref"] == json!(canonical)
                });
                let Some(id) = found.and_then(|i| i["id"].as_str()) else {
                    return Err(Fail::Usage(format!(
                        "no uploaded image `{name}` (see envd images ls)"
                    )));
                };
                call(
                    reqwest::Method::DELETE,
                    c,
                    &format!("/v1/images/{id}"),
                    None,
                )
                .await?;
                println!("removed {name}");
            }
            Ok(())
        }
    }
}

async fn push(c: &Conn, images: Vec<String>, file: Option<String>) -> Result<(), Fail> {
    let t = Instant::now();
    let mut child = None;
    let body = match file.as_deref() {
        Some("-") => {
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
        }
        Some(f) => {
            let file = tokio::fs::File::open(f)
                .await
                .map_err(|e| Fail::Usage(format!("--file {f}: {e}")))?;
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
        }
        None if images.is_empty() => {
            return Err(Fail::Usage(
                "name the images to push (envd images push shop:x), or give --file".into(),
            ));
        }
        None => {
            // Streamed: `docker save` writes while envd stores; nothing is held in memory.
            let mut cmd = tokio::process::Command::new("docker");
            cmd.arg("save")
                .args(&images)
                .stdout(std::process::Stdio::piped());
            let mut ch = cmd.spawn().map_err(|e| {
                Fail::Usage(format!(
                    "running docker save: {e}; is the docker CLI installed?"
                ))
            })?;
            let out = ch
                .stdout
                .take()
                .ok_or_else(|| Fail::Usage("docker save gave no output".into()))?;
            child = Some(ch);
            reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::with_capacity(out, 1 << 20)
                    .map_err(std::io::Error::other),
            )
        }
    };
    let resp = c
        .request(reqwest::Method::POST, "/v1/images")
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .body(body)
        .send()
        .await;
    if let Some(mut ch) = child {
        let status = ch
            .wait()
            .await
            .map_err(|e| Fail::Usage(format!("docker save: {e}")))?;
        if !status.success() {
            return Err(Fail::Usage(format!(
                "docker save {} failed ({status}); are the images in the local engine?",
                images.join(" ")
            )));
        }
    }
    let resp =
        resp.map_err(|e| Fail::Unreachable(format!("cannot reach envd at {} ({e})", c.server)))?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        return Err(Fail::Server(format!("{} ({status})", s(&v["detail"]))));
    }
    for i in v.as_array().into_iter().flatten() {
        println!(
            "pushed {} ({:.1} MB) in {:.1} s",
            s(&i["ref"]),
            i["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    c: Conn,
    /// `ENV POD[/CONTAINER]`, or with --key only `POD[/CONTAINER]`.
    #[arg(required = true, num_args = 1..=2, value_name = "ENV POD[/CONTAINER]")]
    target: Vec<String>,
    /// The new image, e.g. registry.lab/shop:feature-x (or one pushed with envd images push).
    #[arg(long)]
    image: String,
    /// The live env holding this CI key (e.g. the branch) instead of ENV.
    #[arg(long)]
    key: Option<String>,
}

/// `envd deploy`: the pod's new image as the env's next config generation; waits until it
/// answers (or the previous image is back, exit 2).
pub async fn deploy(a: DeployArgs) -> Result<(), Fail> {
    let (env, target) = match (&a.key, a.target.as_slice()) {
        (Some(key), [target]) => {
            let path = format!("/v1/envs?key={}", envd::urlencode(key));
            let (_, v) = call(reqwest::Method::GET, &a.c, &path, None).await?;
            let id = v
                .as_array()
                .and_then(|l| l.first())
                .and_then(|e| e["id"].as_str())
                .ok_or_else(|| Fail::Usage(format!("no live env holds key `{key}`; create it with envd create --key {key}")))?;
            (id.to_string(), target.clone())
        }
        (None, [env, target]) => (env.clone(), target.clone()),
        _ => return Err(Fail::Usage("write envd deploy ENV POD[/CONTAINER] --image REF, or envd deploy --key KEY POD --image REF".into())),
    };
    let (pod, container) = match target.split_once('/') {
        Some((p, c)) => (p.to_string(), Some(c.to_string())),
        None => (target, None),
    };
    let body = json!({"image": a.image, "container": container});
    let path = format!(
        "/v1/envs/{}/pods/{}?wait=true",
        envd::urlencode(&env),
        envd::urlencode(&pod)
    );
    let t = Instant::now();
    let (_, v) = call(reqwest::Method::PATCH, &a.c, &path, Some(body)).await?;
    println!(
        "{env} {pod}: {} ({}, generation {}) in {:.1} s",
        a.image,
        s(&v["action"]),
        s(&v["generation"]),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
