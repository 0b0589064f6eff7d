//! Image references as templates and `docker save` spell them, split into the parts a
//! registry needs.

/// `[host/]path[:tag][@digest]`; `host` only when the first component names one (has a
/// `.` or `:`, or is `localhost`), as Docker reads references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub host: Option<String>,
    pub path: String,
    pub tag: String,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Option<ImageRef> {
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) if d.starts_with("sha256:") && d.len() == 71 => (n, Some(d.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (name, "latest".to_string()),
        };
        let (host, path) = match name.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (Some(h.to_string()), p.to_string())
            }
            _ => (None, name.to_string()),
        };
        let path_ok = !path.is_empty()
            && path.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        (path_ok && tag_ok).then_some(ImageRef {
            host,
            path,
            tag,
            digest,
        })
    }

    /// The reference as Docker names it in a node: `host/path:tag`, the tag explicit.
    pub fn canonical(&self) -> String {
        let mut s = match &self.host {
            Some(h) => format!("{h}/{}:{}", self.path, self.tag),
            None => format!("{}:{}", self.path, self.tag),
        };
        if let Some(d) = &self.digest {
            s = format!("{s}@{d}");
        }
        s
    }

    /// What to ask a registry's manifest endpoint for: the digest when pinned.
    pub fn reference(&self) -> &str {
        self.digest.as_deref().unwrap_or(&self.tag)
    }
}

/// A registry host as one repository path component of envd's cache (`:` is not allowed
/// there): `registry.lab:5000` → `registry.lab_5000`.
pub fn host_component(host: &str) -> String {
    host.replace(':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_path_tag_digest() {
        let r = ImageRef::parse("registry.lab:5000/shop/web:feature-x").unwrap();
        assert_eq!(r.host.as_deref(), Some("registry.lab:5000"));
        assert_eq!(r.path, "shop/web");
        assert_eq!(r.tag, "feature-x");
        assert_eq!(r.canonical(), "registry.lab:5000/shop/web:feature-x");
        let r = ImageRef::parse("myapp").unwrap();
        assert_eq!(
            (r.host, r.path.as_str(), r.tag.as_str()),
            (None, "myapp", "latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert_eq!(host_component("127.0.0.1:5391"), "127.0.0.1_5391");
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for bad in ["", "UPPER/x", "a//b", "x:", "x@sha256:short", "x:bad tag"] {
            assert!(ImageRef::parse(bad).is_none(), "{bad}");
        }
    }
}
