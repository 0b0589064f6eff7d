//! Tokens: how they are made, hashed and issued, and the admin token of `envd serve`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};

use super::Role;
use crate::error::{Error, IoContext, Result};
use crate::store::{NewToken, Store, TokenRow, now_ms};

/// The prefix of every token: makes one recognisable in a leaked log or a secret scanner.
pub const TOKEN_PREFIX: &str = "envd_";

/// A new token: 256 random bits from the OS-seeded CSPRNG, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// What the store keeps of a token. Tokens are 256 random bits, so a plain SHA-256
/// cannot be reversed by guessing.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn looks_like_token(t: &str) -> bool {
    t.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A name or owner: 1-64 of letters, digits, `.`, `_`, `@`, `-`.
pub fn check_label(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "request",
            field,
            format!("`{v}` is not a valid {field}: 1-64 of letters, digits, '.', '_', '@', '-'"),
        ))
    }
}

/// Issues a token: the returned string is its only copy.
pub async fn issue(
    store: &Store,
    name: &str,
    role: Role,
    owner: &str,
    expires_in: Option<Duration>,
) -> Result<(String, TokenRow)> {
    check_label("name", name)?;
    check_label("owner", owner)?;
    let token = new_token();
    let id = uuid::Uuid::now_v7().to_string();
    let row = store
        .insert_token(&NewToken {
            id: &id,
            name,
            hash: &hash(&token),
            role: role.as_str(),
            owner,
            expires_at: expires_in.map(|d| now_ms() + d.as_millis() as i64),
        })
        .await?;
    Ok((token, row))
}

/// The admin token of `envd serve`: read from `<data-dir>/admin-token` when there (and
/// recorded, so a new store still knows it), else made and written there (0600).
/// Returns the file and whether it was made now.
pub async fn bootstrap_admin(store: &Store, data_dir: &Path) -> Result<(PathBuf, bool)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = data_dir.join("admin-token");
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            });
        }
    };
    let (token, made) = match existing {
        Some(t) if looks_like_token(&t) => {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .io_ctx(|| format!("making {} 0600", path.display()))?;
            (t, false)
        }
        Some(_) => {
            return Err(Error::invalid(
                "admin-token",
                path.display().to_string(),
                "is not an envd token; delete the file and envd makes a new one at start",
            ));
        }
        None => {
            let t = new_token();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .io_ctx(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut f, format!("{t}\n").as_bytes())
                .io_ctx(|| format!("writing {}", path.display()))?;
            (t, true)
        }
    };
    match store.token_by_hash(&hash(&token)).await? {
        Some(row) if row.revoked_at.is_some() => tracing::warn!(
            "the admin token in {} is revoked; delete the file and restart envd for a new one",
            path.display()
        ),
        Some(_) => {}
        None => {
            // Several envd on one store each have their own file: name them apart.
            let name = format!("admin-{}", &hash(&token)[..8]);
            let inserted = store
                .insert_token(&NewToken {
                    id: &uuid::Uuid::now_v7().to_string(),
                    name: &name,
                    hash: &hash(&token),
                    role: Role::Admin.as_str(),
                    owner: "admin",
                    expires_at: None,
                })
                .await;
            match inserted {
                // Two envd given the same token file, started at once on one store: the
                // other one recorded it meanwhile.
                Err(Error::Conflict(_)) if store.token_by_hash(&hash(&token)).await?.is_some() => {}
                r => {
                    r?;
                }
            }
        }
    }
    Ok((path, made))
}
