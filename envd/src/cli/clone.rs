//! `envd clone ENV [--name N] [--with-data]`: a new env from a ready one.

use clap::Args;
use serde_json::json;

use super::{Conn, Fail, Output, call};

#[derive(Args)]
pub struct CloneArgs {
    #[command(flatten)]
    c: Conn,
    /// id or name of a ready env
    env: String,
    #[arg(long)]
    name: Option<String>,
    /// Copy the contents of its databases (MySQL, Mongo, Redis) too.
    #[arg(long)]
    with_data: bool,
    /// Time to live, e.g. 2h.
    #[arg(long)]
    ttl: Option<String>,
    /// Wait until the clone is ready (or failed).
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value = "10m")]
    timeout: String,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

pub(super) async fn run(a: CloneArgs) -> Result<(), Fail> {
    let body = json!({
        "name": a.name, "with_data": a.with_data, "ttl": a.ttl,
    });
    let path = format!("/v1/envs/{}/clone", envd::urlencode(&a.env));
    let (_, env) = call(reqwest::Method::POST, &a.c, &path, Some(body)).await?;
    super::settle(&a.c, env, a.wait, &a.timeout, a.output).await
}
