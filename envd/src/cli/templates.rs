//! `envd templates import FILE --name N`: send a docker-compose file (with the `.env` and
//! the files its bind mounts name) to be stored as a template; print what was mapped.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{Conn, Fail, call, s};

#[derive(Subcommand)]
pub enum TemplatesCmd {
    /// Import a docker-compose file as the next version of template NAME.
    Import {
        /// docker-compose.yml (files it bind-mounts are read relative to it).
        file: PathBuf,
        /// Template name: 1-40 of [a-z0-9-].
        #[arg(long)]
        name: String,
    },
}

pub async fn run(c: &Conn, cmd: TemplatesCmd) -> Result<(), Fail> {
    let TemplatesCmd::Import { file, name } = cmd;
    let got = envd::compose::collect(&file).map_err(|e| Fail::Usage(e.to_string()))?;
    for skipped in &got.skipped {
        eprintln!("not sent: {skipped}");
    }
    let source = file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let body = json!({
        "name": name, "compose": got.compose, "source": source,
        "files": got.files, "env": got.env,
    });
    let (_, v) = call(reqwest::Method::POST, c, "/v1/templates/import", Some(body)).await?;
    println!(
        "imported {} as template {}:{} ({})",
        file.display(),
        s(&v["template"]),
        s(&v["version"]),
        s(&v["path"])
    );
    for n in v["notes"].as_array().into_iter().flatten() {
        println!("  - {}", s(n));
    }
    println!(
        "create it with: envd create -t {}:{} --wait",
        s(&v["template"]),
        s(&v["version"])
    );
    Ok(())
}
