//! Nothing an env's containers write makes envd change the host: the symlink attack on the
//! pods' log dirs (from the stubs sidecar and from an app pod) leaves a canary directory's
//! mode and contents as they were through resyncs, and exec into stubs is refused.
//! Slices 181-189.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use envd::engine::ExecRequest;
use futures_util::StreamExt;

mod common;

const TEMPLATE: &str = r#"
name: hostpaths
version: "1"
pods:
  - name: app
    containers:
      - name: app
        image: envd/redis:latest
        command: [bash, -c, "trap exit TERM; while :; do sleep 1 & wait $!; done"]
        dirs: [{ source: "", path: /srv/code }]
"#;

/// A directory as `envd create --dir app=DIR` sends it: base64 of a gzip'd tar.
fn uploaded(files: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    base64::engine::general_purpose::STANDARD.encode(b.into_inner().unwrap().finish().unwrap())
}

async fn inner(engine: &envd::engine::Engine, id: &str) -> Docker {
    let sock = engine.cfg.run_dir.join(id).join("docker.sock");
    Docker::connect_with_unix(&sock.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// Runs `script` in an inner container as an attacker with a shell there would: exit code
/// and output.
async fn sh(inner: &Docker, container: &str, script: &str) -> (i64, String) {
    let exec = inner
        .create_exec(
            container,
            ExecConfig {
                cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        inner.start_exec(&exec.id, None).await.unwrap()
    {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    let code = inner
        .inspect_exec(&exec.id)
        .await
        .unwrap()
        .exit_code
        .unwrap_or(-1);
    (code, out)
}

/// The canary's mode and its files with their contents.
fn snapshot(dir: &Path) -> (u32, Vec<(String, String)>) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            (name, content)
        })
        .collect();
    files.sort();
    (mode, files)
}

#[tokio::test(flavor = "multi_thread")]
async fn log_dir_links_never_reach_the_host() {
    let templates = common::harness::template_dir("hostpaths", TEMPLATE);
    let Some(h) = common::harness::harness(181, Some(templates.path().to_path_buf())).await else {
        return;
    };
    let mut req = common::harness::request("hostpaths", &[]);
    req.dirs
        .insert("app".into(), uploaded(&[("lib/hello.txt", "uploaded\n")]));
    let (env, _guard) = h.ready_with(req).await;
    let canary = tempfile::tempdir().unwrap();
    std::fs::set_permissions(canary.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(canary.path().join("keep"), "canary\n").unwrap();
    let before = snapshot(canary.path());
    let c = canary.path().display().to_string();
    let inner = inner(&h.engine, &env.id).await;

    // The directory uploaded with the create is where the template's `dirs:` say.
    let (code, out) = sh(&inner, "app-app", "cat /srv/code/lib/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "uploaded\n"));

    // From inside stubs: its view of the other pods' log dirs is read-only.
    let (code, out) = sh(
        &inner,
        "stubs-stubs",
        &format!("mv /var/log/envd/app /var/log/envd/app.old && ln -s {c} /var/log/envd/app"),
    )
    .await;
    assert_ne!(code, 0, "stubs could replace a pod's log dir: {out}");
    println!("from stubs: exit {code}: {}", out.trim());
    // Its own dir it may write, but that is a mount point: it cannot be swapped either.
    let (code, out) = sh(
        &inner,
        "stubs-stubs",
        &format!("mv /var/log/envd/stubs /tmp/x || ln -s {c} /var/log/envd/app/link"),
    )
    .await;
    assert_ne!(code, 0, "{out}");

    // From the app pod: its own log dir is a mount point; links inside it stay links.
    let (code, out) = sh(
        &inner,
        "app-app",
        &format!("mv /var/log/envd/app /var/log/envd/app.old; ln -s {c} /var/log/envd/app/link"),
    )
    .await;
    println!("from app: exit {code}: {}", out.trim());

    // Had a container done it anyway (or a later bug let one): the link on the host side
    // of the node's volume, then a resync.
    let vol = envd::engine::host_docker()
        .await
        .unwrap()
        .inspect_volume(&format!("envd-{}-docker", env.short_id()))
        .await
        .unwrap();
    let logs = Path::new(&vol.mountpoint).join("envd-logs");
    std::fs::rename(logs.join("app"), logs.join("app.old")).unwrap();
    std::os::unix::fs::symlink(canary.path(), logs.join("app")).unwrap();
    // A healthy env's resync touches nothing; one whose app container is gone makes the
    // pod again, log dir included, and must refuse the link rather than follow it.
    let resync = h.engine.reconcile(&env.id).await;
    println!("resync of the healthy env with a linked log dir: {resync:?}");
    assert_eq!(snapshot(canary.path()), before, "the canary changed");
    inner
        .remove_container(
            "app-app",
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    // The loop retries a failed step with backoff: it cannot finish while the link is there.
    let resync = tokio::time::timeout(Duration::from_secs(5), h.engine.reconcile(&env.id)).await;
    println!("resync remaking the app pod with a linked log dir: {resync:?}");
    assert!(resync.is_err(), "the pod was made again through the link");
    assert_eq!(snapshot(canary.path()), before, "the canary changed");

    // Exec into stubs is refused, naming the pod.
    let req = ExecRequest {
        cmd: vec!["id".into()],
        ..Default::default()
    };
    let e = h
        .engine
        .exec_target(&env.id, "stubs", &req)
        .await
        .err()
        .expect("exec into stubs refused");
    assert!(
        matches!(&e, envd::Error::Invalid { field, .. } if field == "pod"),
        "{e}"
    );
    assert!(e.to_string().contains("stubs"), "{e}");

    // Put back, the env resyncs and tears down cleanly; the canary is still untouched.
    std::fs::remove_file(logs.join("app")).unwrap();
    std::fs::rename(logs.join("app.old"), logs.join("app")).unwrap();
    h.engine.reconcile(&env.id).await.unwrap();
    let gone = h.teardown(&env.id).await;
    assert_eq!(gone.state, envd::store::State::Gone, "{:?}", gone.error);
    h.assert_nothing_left(&env).await;
    assert_eq!(snapshot(canary.path()), before, "the canary changed");
}
