//! What a guest may reach: the hosts its manifest declares, and nothing else.
//!
//! Policy is kept apart from transport: `NetPolicy::resolve` decides where a guest's URL may go
//! (and whether the tenant's token may go with it) before `http` opens any connection. When the
//! user points the host at an emulator or another test server, the declared hosts are rewritten
//! onto that base URL; the guest keeps using the canonical URLs and never learns a
//! different address.

use std::collections::BTreeSet;

use url::Url;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("destination not allowed: {0}")]
    NotAllowed(String),
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

/// Where a permitted request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The URL the host connects to.
    pub url: String,
    /// The declared host the guest addressed (the tenant's token may be attached for it).
    pub declared_host: String,
}

#[derive(Debug, Clone)]
pub struct NetPolicy {
    allowed_hosts: BTreeSet<String>,
    /// Base URL that stands in for every declared host (an emulator); `None` for the real service.
    redirect_base: Option<Url>,
}

impl NetPolicy {
    pub fn new(
        allowed_hosts: impl IntoIterator<Item = String>,
        redirect_base: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let redirect_base = match redirect_base {
            None => None,
            Some(base) => {
                let url = Url::parse(base).map_err(|e| PolicyError::InvalidUrl {
                    url: base.into(),
                    reason: e.to_string(),
                })?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(PolicyError::InvalidUrl {
                        url: base.into(),
                        reason: "not an http(s) URL".into(),
                    });
                }
                Some(url)
            }
        };
        Ok(NetPolicy {
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            redirect_base,
        })
    }

    pub fn allowed_hosts(&self) -> impl Iterator<Item = &str> {
        self.allowed_hosts.iter().map(String::as_str)
    }

    pub fn redirect_base(&self) -> Option<&str> {
        self.redirect_base.as_ref().map(|u| u.as_str())
    }

    /// Decide whether the guest may fetch `url`, and where the request really goes.
    pub fn resolve(&self, url: &str) -> Result<Resolved, PolicyError> {
        let parsed = Url::parse(url).map_err(|e| PolicyError::InvalidUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() != "https" {
            return Err(PolicyError::NotAllowed(format!(
                "{url}: only https URLs may be requested"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(PolicyError::NotAllowed(format!(
                "{url}: URLs with user information are refused"
            )));
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        if parsed.port().is_some() || !self.allowed_hosts.contains(&host) {
            return Err(PolicyError::NotAllowed(host));
        }
        let target = match &self.redirect_base {
            None => parsed.to_string(),
            Some(base) => {
                let mut target = base.clone();
                let base_path = base.path().trim_end_matches('/');
                target.set_path(&format!("{base_path}{}", parsed.path()));
                target.set_query(parsed.query());
                target.to_string()
            }
        };
        Ok(Resolved {
            url: target,
            declared_host: host,
        })
    }

    /// Rewrite a host-side URL (the OAuth endpoints) the same way, without the allowlist:
    /// these URLs come from the manifest, not from the guest at run time.
    pub fn rewrite(&self, url: &str) -> String {
        match (&self.redirect_base, Url::parse(url)) {
            (Some(base), Ok(parsed)) => {
                let mut target = base.clone();
                let base_path = base.path().trim_end_matches('/');
                target.set_path(&format!("{base_path}{}", parsed.path()));
                target.set_query(parsed.query());
                target.to_string()
            }
            _ => url.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(redirect: Option<&str>) -> NetPolicy {
        NetPolicy::new(
            [
                "api.example-source.com".to_string(),
                "content.example-source.com".to_string(),
            ],
            redirect,
        )
        .unwrap()
    }

    #[test]
    fn declared_hosts_only() {
        let p = policy(None);
        assert!(
            p.resolve("https://api.example-source.com/2/files/list_folder")
                .is_ok()
        );
        for bad in [
            "https://evil.example/2/files/list_folder",
            "http://api.example-source.com/2/x",
            "https://api.example-source.com:8443/2/x",
            "https://user:pw@api.example-source.com/2/x",
            "https://api.example-source.com.evil.example/",
            "https://127.0.0.1/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(p.resolve(bad), Err(PolicyError::NotAllowed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            p.resolve("not a url"),
            Err(PolicyError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn redirect_to_emulator_keeps_path_and_query() {
        let p = policy(Some("http://127.0.0.1:9999"));
        let r = p
            .resolve("https://content.example-source.com/2/files/download?arg=%7B%7D")
            .unwrap();
        assert_eq!(r.url, "http://127.0.0.1:9999/2/files/download?arg=%7B%7D");
        assert_eq!(r.declared_host, "content.example-source.com");
        assert!(p.resolve("https://evil.example/2/x").is_err());
    }
}
