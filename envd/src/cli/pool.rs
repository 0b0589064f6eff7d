//! `envd pool set|ls`: warm pools (admin).

use clap::Subcommand;
use serde_json::json;

use super::{Conn, Fail, call, pairs, s};

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Keep MIN envs of a template ready (`--min 0` drains the pool): a create of that
    /// template with the same answers takes one in a fraction of a second.
    Set {
        /// `name` or `name:version` of a template.
        template: String,
        #[arg(long)]
        min: u32,
        /// At most this many (default: MIN); more are torn down.
        #[arg(long)]
        max: Option<u32>,
        /// The pool's answers, as for create (the template's defaults for the rest).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The pool's name (default: the template as given).
        #[arg(long)]
        name: Option<String>,
    },
    /// Each pool: ready and building envs, min/max, takes, misses and hit rate.
    Ls,
}

pub async fn run(c: &Conn, cmd: PoolCmd) -> Result<(), Fail> {
    match cmd {
        PoolCmd::Set {
            template,
            min,
            max,
            set,
            name,
        } => {
            let name = name.unwrap_or_else(|| template.clone());
            let body = json!({
                "template": template, "min": min, "max": max, "answers": pairs("--set", &set)?,
            });
            let path = format!("/v1/pools/{}", envd::urlencode(&name));
            let (_, v) = call(reqwest::Method::PUT, c, &path, Some(body)).await?;
            println!(
                "pool {}: min {} max {} ({} ready, {} building)",
                s(&v["name"]),
                v["min"],
                v["max"],
                v["ready"],
                v["creating"]
            );
            Ok(())
        }
        PoolCmd::Ls => {
            let (_, v) = call(reqwest::Method::GET, c, "/v1/pools", None).await?;
            println!(
                "{:<16} {:<14} {:>5} {:>8} {:>4} {:>4} {:>7} {:>7} {:>8}",
                "POOL",
                "TEMPLATE",
                "READY",
                "CREATING",
                "MIN",
                "MAX",
                "CLAIMS",
                "MISSES",
                "HIT RATE"
            );
            for p in v.as_array().cloned().unwrap_or_default() {
                let rate = p["hit_rate"]
                    .as_f64()
                    .map(|r| format!("{:.0}%", r * 100.0))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<16} {:<14} {:>5} {:>8} {:>4} {:>4} {:>7} {:>7} {rate:>8}",
                    s(&p["name"]),
                    s(&p["template"]),
                    // A JSON value ignores the width; its text keeps the columns.
                    p["ready"].to_string(),
                    p["creating"].to_string(),
                    p["min"].to_string(),
                    p["max"].to_string(),
                    p["claims"].to_string(),
                    p["misses"].to_string(),
                );
                if let Some(problem) = p["problem"].as_str() {
                    println!("  ! {problem}");
                }
            }
            Ok(())
        }
    }
}
