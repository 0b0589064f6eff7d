//! Branch events from the forges (`POST /v1/hooks/github`, `/v1/hooks/gitlab`): their own
//! payloads, authenticated by the hook's secret (GitHub: HMAC-SHA256 of the body in
//! `X-Hub-Signature-256`; GitLab: the secret itself in `X-Gitlab-Token`), both compared in
//! constant time. A pull/merge request closed or merged tears down the env keyed by its
//! branch; a push redeploys the branch's env when the config maps the repository to a
//! pod and an image. Pure: the API does what [`Event`] says.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `[hooks.github]` / `[hooks.gitlab]` of envd's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The hook's secret as set in the forge (never logged).
    pub secret: String,
    /// Whose envs the hook acts on (their CI keys are per owner). Default `ci`.
    pub owner: Option<String>,
    /// The env key of a branch: `{branch}` (the default) and `{repo}` are replaced.
    pub key: Option<String>,
    /// Repository (`org/shop`) → what a push to a branch redeploys.
    #[serde(default)]
    pub deploy: BTreeMap<String, DeployRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRule {
    /// `pod` or `pod/container`.
    pub pod: String,
    /// The image, `{branch}`, `{sha}` and `{repo}` replaced, e.g. `registry.lab/shop:{branch}`.
    pub image: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    pub github: Option<HookConfig>,
    pub gitlab: Option<HookConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Tear down the env holding `key`.
    Teardown { key: String },
    /// Put `image` into `target` of the env holding `key`.
    Deploy {
        key: String,
        target: String,
        image: String,
    },
    /// Nothing to do (another event, an opened PR, an unmapped repository), and why.
    Ignored(String),
}

/// Whether the delivery carries the hook's secret. `signature` is the header's value.
pub fn verify(forge: Forge, secret: &str, signature: Option<&str>, body: &[u8]) -> bool {
    let Some(sig) = signature else { return false };
    if secret.is_empty() {
        return false;
    }
    match forge {
        Forge::GitHub => {
            let Some(hex_sig) = sig.strip_prefix("sha256=") else {
                return false;
            };
            let Ok(want) = hex::decode(hex_sig) else {
                return false;
            };
            let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&want).is_ok()
        }
        Forge::GitLab => same(sig.as_bytes(), secret.as_bytes()),
    }
}

/// Constant-time equality of two secrets: their MACs under one key, compared by `hmac`.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mac = |x: &[u8]| {
        let mut m = HmacSha256::new_from_slice(b"envd hook token").ok()?;
        m.update(x);
        Some(m)
    };
    match (mac(a), mac(b)) {
        (Some(ma), Some(mb)) => mb.verify_slice(&ma.finalize().into_bytes()).is_ok(),
        _ => false,
    }
}

fn fill(pattern: &str, branch: &str, repo: &str, sha: &str) -> String {
    pattern
        .replace("{branch}", branch)
        .replace("{repo}", repo)
        .replace("{sha}", sha)
}

/// An image tag from a branch name: Docker tags take `[A-Za-z0-9_.-]`, so `feature/x`
/// becomes `feature-x`.
fn tag_safe(branch: &str) -> String {
    branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The branch a (verified) delivery is about, for the audit trail.
pub fn branch_of(forge: Forge, event: &str, payload: &Value) -> Option<String> {
    let at = match (forge, event) {
        (Forge::GitHub, "pull_request") => "/pull_request/head/ref",
        (Forge::GitLab, "Merge Request Hook") => "/object_attributes/source_branch",
        (Forge::GitHub, "push") | (Forge::GitLab, "Push Hook") => "/ref",
        _ => return None,
    };
    let v = payload.pointer(at)?.as_str()?;
    Some(v.strip_prefix("refs/heads/").unwrap_or(v).to_string())
}

/// Reads a delivery (`event` is the `X-GitHub-Event` / `X-Gitlab-Event` header).
pub fn interpret(forge: Forge, cfg: &HookConfig, event: &str, payload: &Value) -> Event {
    let s = |p: &str| {
        payload
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let key_of =
        |branch: &str, repo: &str| fill(cfg.key.as_deref().unwrap_or("{branch}"), branch, repo, "");
    match (forge, event) {
        (Forge::GitHub, "pull_request") => {
            let (branch, repo) = (s("/pull_request/head/ref"), s("/repository/full_name"));
            if s("/action") == "closed" && !branch.is_empty() {
                Event::Teardown {
                    key: key_of(&branch, &repo),
                }
            } else {
                Event::Ignored(format!("pull request {}", s("/action")))
            }
        }
        (Forge::GitLab, "Merge Request Hook") => {
            let (branch, repo) = (
                s("/object_attributes/source_branch"),
                s("/project/path_with_namespace"),
            );
            let action = s("/object_attributes/action");
            if matches!(action.as_str(), "close" | "merge") && !branch.is_empty() {
                Event::Teardown {
                    key: key_of(&branch, &repo),
                }
            } else {
                Event::Ignored(format!("merge request {action}"))
            }
        }
        (Forge::GitHub, "push") | (Forge::GitLab, "Push Hook") => {
            let repo = match forge {
                Forge::GitHub => s("/repository/full_name"),
                Forge::GitLab => s("/project/path_with_namespace"),
            };
            let Some(branch) = s("/ref").strip_prefix("refs/heads/").map(str::to_string) else {
                return Event::Ignored("a push that is not to a branch".into());
            };
            let sha = s("/after");
            if payload.pointer("/deleted").and_then(Value::as_bool) == Some(true)
                || sha.bytes().all(|b| b == b'0')
            {
                return Event::Ignored(format!("branch {branch} deleted"));
            }
            let Some(rule) = cfg.deploy.get(&repo) else {
                return Event::Ignored(format!("no deploy rule for repository {repo}"));
            };
            Event::Deploy {
                key: key_of(&branch, &repo),
                target: rule.pod.clone(),
                image: fill(&rule.image, &tag_safe(&branch), &repo, &sha),
            }
        }
        (_, other) => Event::Ignored(format!("event {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (Vec<u8>, Value) {
        let path = format!("{}/tests/fixtures/hooks/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap();
        let v = serde_json::from_slice(&body).unwrap();
        (body, v)
    }

    fn cfg() -> HookConfig {
        HookConfig {
            secret: "It's a Secret to Everybody".into(),
            deploy: BTreeMap::from([(
                "octo-org/shop".to_string(),
                DeployRule {
                    pod: "web".into(),
                    image: "registry.lab/shop:{branch}".into(),
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn github_signature_as_documented() {
        // GitHub's own example: secret, payload and signature from its docs.
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify(
            Forge::GitHub,
            "It's a Secret to Everybody",
            Some(sig),
            body
        ));
        assert!(!verify(Forge::GitHub, "another secret", Some(sig), body));
        assert!(!verify(
            Forge::GitHub,
            "It's a Secret to Everybody",
            Some(sig),
            b"Hello, World?"
        ));
        assert!(!verify(
            Forge::GitHub,
            "It's a Secret to Everybody",
            None,
            body
        ));
        assert!(!verify(
            Forge::GitHub,
            "It's a Secret to Everybody",
            Some("sha1=00"),
            body
        ));
    }

    #[test]
    fn gitlab_token_compared_whole() {
        assert!(verify(Forge::GitLab, "s3cret", Some("s3cret"), b"{}"));
        assert!(!verify(Forge::GitLab, "s3cret", Some("s3cre"), b"{}"));
        assert!(!verify(Forge::GitLab, "", Some(""), b"{}"));
    }

    #[test]
    fn closed_or_merged_requests_tear_down_the_branch_env() {
        let (_, v) = fixture("github-pr-closed.json");
        assert_eq!(
            interpret(Forge::GitHub, &cfg(), "pull_request", &v),
            Event::Teardown {
                key: "feature/cart".into()
            }
        );
        let (_, v) = fixture("gitlab-mr-merged.json");
        let c = HookConfig {
            key: Some("{repo}:{branch}".into()),
            ..cfg()
        };
        assert_eq!(
            interpret(Forge::GitLab, &c, "Merge Request Hook", &v),
            Event::Teardown {
                key: "octo-org/shop:feature/cart".into()
            }
        );
        let (_, v) = fixture("github-pr-opened.json");
        assert!(matches!(
            interpret(Forge::GitHub, &cfg(), "pull_request", &v),
            Event::Ignored(_)
        ));
    }

    #[test]
    fn a_push_redeploys_when_the_repository_is_mapped() {
        let (_, v) = fixture("github-push.json");
        assert_eq!(
            interpret(Forge::GitHub, &cfg(), "push", &v),
            Event::Deploy {
                key: "feature/cart".into(),
                target: "web".into(),
                image: "registry.lab/shop:feature-cart".into(),
            }
        );
        let (_, v) = fixture("gitlab-push.json");
        assert!(matches!(
            interpret(Forge::GitLab, &cfg(), "Push Hook", &v),
            Event::Deploy { .. }
        ));
        let unmapped = HookConfig {
            deploy: BTreeMap::new(),
            ..cfg()
        };
        assert!(matches!(
            interpret(Forge::GitHub, &unmapped, "push", &v),
            Event::Ignored(_)
        ));
    }
}
