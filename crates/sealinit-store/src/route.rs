//! Where a secret goes (issue #25): its delivery, and for the `proxy`
//! delivery the hosts its value may be sent to and the shape of the
//! placeholder that stands for it in the sandbox. Part of each version of a
//! secret, validated here once for every entry point, and bound into the
//! version's ciphertext (so that a row edited in the database from `proxy`
//! to `env` no longer decrypts).

use serde::{Deserialize, Serialize};

pub use sealinit_core::bundle::Delivery;
use sealinit_core::bundle::Entry;

use crate::{Result, StoreError};

/// How a proxy secret's placeholder looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placeholder {
    /// `sealinit-` and random characters.
    #[default]
    Random,
    /// The real value's recognisable prefix (through the last `_` of its
    /// first 8 characters, else those 8) and its length, the rest random: SDKs that check a
    /// key's shape before sending it accept it.
    KeepPrefix,
}

impl Placeholder {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "random" => Some(Self::Random),
            "keep-prefix" => Some(Self::KeepPrefix),
            _ => None,
        }
    }

    fn is_random(&self) -> bool {
        *self == Self::Random
    }
}

/// A secret version's delivery, hosts and placeholder shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub delivery: Delivery,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Placeholder::is_random")]
    pub placeholder: Placeholder,
    /// A proxy secret whose placeholder is also replaced in request bodies
    /// (to its hosts), not only in the request line's headers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_body: bool,
    /// An organisation's secret: the repositories of the owner it reaches
    /// (`None`: all of them). Bound into the ciphertext like the rest, so
    /// that an edited row cannot widen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<String>>,
}

/// What a write says of a secret's route: each part given replaces the
/// current version's; a part not given is kept (a value rotated through the
/// proxy stays there). A new secret starts from `env`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteChange {
    pub delivery: Option<Delivery>,
    pub hosts: Option<Vec<String>>,
    pub placeholder: Option<Placeholder>,
    pub in_body: Option<bool>,
    /// An organisation's secret: `Some(None)` for all the owner's
    /// repositories, `Some(Some(list))` for those selected.
    pub repos: Option<Option<Vec<String>>>,
}

impl RouteChange {
    /// The route after this change to `current` (a new secret: `None`).
    pub fn apply(&self, current: Option<&Route>) -> Route {
        let mut r = current.cloned().unwrap_or_default();
        if let Some(d) = self.delivery {
            if d != r.delivery {
                // Hosts and placeholder belong to the proxy delivery.
                // An organisation secret's reach is not the delivery's.
                r = Route {
                    delivery: d,
                    repos: r.repos.clone(),
                    ..Route::default()
                };
            }
        }
        if let Some(h) = &self.hosts {
            r.hosts = h.clone();
        }
        if let Some(p) = self.placeholder {
            r.placeholder = p;
        }
        if let Some(b) = self.in_body {
            r.in_body = b;
        }
        if let Some(repos) = &self.repos {
            r.repos = repos.clone();
        }
        r
    }
}

impl std::fmt::Display for Route {
    /// `proxy → api.stripe.com *.example.com`, or the delivery alone.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.delivery {
            Delivery::Proxy => {
                write!(f, "proxy → {}", self.hosts.join(" "))?;
                match self.in_body {
                    true => write!(f, " (bodies too)"),
                    false => Ok(()),
                }
            }
            d => write!(f, "{d}"),
        }
    }
}

impl Route {
    /// What a database column holds: empty for the default (`env`, as
    /// every secret stored before schema 8), else this JSON.
    pub fn to_column(&self) -> String {
        match *self == Self::default() {
            true => String::new(),
            false => serde_json::to_string(self).expect("a route serialises"),
        }
    }

    /// Reads a column. Text that is not a route reads as the default,
    /// whose associated data then does not open the row's ciphertext.
    pub fn from_column(text: &str) -> Self {
        match text {
            "" => Self::default(),
            t => serde_json::from_str(t).unwrap_or_default(),
        }
    }

    /// Bound into the version's associated data (nothing for the default,
    /// so that rows from before schema 8 keep opening).
    pub(crate) fn aad(&self, aad: &mut Vec<u8>) {
        let column = self.to_column();
        if !column.is_empty() {
            aad.extend_from_slice(b"\0route\0");
            aad.extend_from_slice(column.as_bytes());
        }
    }

    /// Checks the route of secret `name` and puts its hosts in canonical
    /// form (lower case, sorted, no duplicates).
    pub fn validate(&mut self, name: &str) -> Result<()> {
        let invalid = |reason: String| StoreError::InvalidRoute {
            name: name.to_owned(),
            reason,
        };
        for h in &mut self.hosts {
            *h = h.trim().to_ascii_lowercase();
            check_host(h).map_err(&invalid)?;
        }
        self.hosts.sort();
        self.hosts.dedup();
        match self.delivery {
            Delivery::Proxy if self.hosts.is_empty() => Err(invalid(
                "a proxy secret needs at least one host its value may be sent to".into(),
            )),
            Delivery::Env | Delivery::Setup if !self.hosts.is_empty() => Err(invalid(format!(
                "hosts belong to proxy secrets; a secret delivered by {} has none",
                self.delivery
            ))),
            Delivery::Env | Delivery::Setup if self.placeholder != Placeholder::Random => {
                Err(invalid("a placeholder belongs to proxy secrets".into()))
            }
            Delivery::Env | Delivery::Setup if self.in_body => Err(invalid(
                "replacing in request bodies belongs to proxy secrets".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Whether every host of this route is one of `vendor`'s (exact names,
    /// or `*.domain` patterns covering them).
    pub fn within(&self, vendor: &[&str]) -> bool {
        !self.hosts.is_empty()
            && self.hosts.iter().all(|h| {
                let name = host_name(h);
                vendor.iter().any(|v| covers(v, name))
            })
    }
}

/// The host of `host[:port]`.
fn host_name(h: &str) -> &str {
    h.rsplit_once(':').map_or(h, |(name, _)| name)
}

/// Whether vendor host `v` (a name or `*.domain`) covers `name` (a name or
/// `*.sub.domain`).
fn covers(v: &str, name: &str) -> bool {
    match v.strip_prefix("*.") {
        None => v == name,
        Some(domain) => {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            bare.len() > domain.len()
                && bare.ends_with(domain)
                && bare.as_bytes()[bare.len() - domain.len() - 1] == b'.'
        }
    }
}

/// Checks a repository's egress policy and puts its hosts in canonical
/// form.
pub fn validate_egress(policy: &mut sealinit_core::bundle::Egress) -> Result<()> {
    for h in &mut policy.allow {
        *h = h.trim().to_ascii_lowercase();
        check_host(h).map_err(StoreError::InvalidEgress)?;
    }
    policy.allow.sort();
    policy.allow.dedup();
    Ok(())
}

/// `name[:port]` or `*.domain[:port]`: DNS labels of letters, digits and
/// `-`, a dot between; a `*.` pattern names at least two labels after it.
fn check_host(h: &str) -> std::result::Result<(), String> {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    if let Some(p) = port {
        if !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err(format!("host {h:?}: the port must be 1 to 65535"));
        }
    }
    let (labels, wildcard) = match name.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (name, false),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let parts: Vec<&str> = labels.split('.').collect();
    if name.len() > 253 || !parts.iter().all(|l| label_ok(l)) {
        return Err(format!(
            "host {h:?} is not a host name (api.example.com) or a pattern (*.example.com), with an optional :port"
        ));
    }
    if wildcard && parts.len() < 2 {
        return Err(format!(
            "host {h:?}: a pattern names a domain of at least two labels (*.example.com)"
        ));
    }
    Ok(())
}

/// A fresh placeholder for `value`: at least 128 bits from the OS, and
/// never a prefix or suffix of another (it begins and ends with random
/// characters; `Random` ones all have the same length).
pub fn placeholder(style: Placeholder, value: &[u8]) -> Result<String> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let random = |n: usize| -> Result<String> {
        // 62 characters: rejection sampling keeps them uniform.
        let mut out = String::with_capacity(n);
        while out.len() < n {
            let mut bytes = [0u8; 64];
            getrandom::fill(&mut bytes).map_err(|e| StoreError::Os {
                op: "getrandom",
                source: std::io::Error::other(e),
            })?;
            for b in bytes {
                if out.len() < n && b < 248 {
                    out.push(ALPHABET[(b % 62) as usize] as char);
                }
            }
        }
        Ok(out)
    };
    match style {
        // 32 characters of 62: 190 bits.
        Placeholder::Random => Ok(format!("sealinit-{}", random(32)?)),
        Placeholder::KeepPrefix => {
            // Through the last `_` of the first 8 characters (`sk_test_`,
            // `ghp_`), else the first 8.
            let cut = value
                .iter()
                .take(8)
                .rposition(|&b| b == b'_')
                .map_or(value.len().min(8), |i| i + 1);
            let prefix: String = value[..cut]
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { 'x' })
                .collect();
            // At least 22 random characters (130 bits), the value's length
            // when it is longer.
            let rest = value.len().saturating_sub(cut).max(22);
            Ok(format!("{prefix}{}", random(rest)?))
        }
    }
}

/// Imported entries and their route changes: an entry that says nothing
/// of its route takes the one given for the whole file.
pub fn with_whole_route(
    parsed: Vec<(Entry, RouteChange)>,
    whole: &RouteChange,
) -> (Vec<Entry>, Vec<RouteChange>) {
    parsed
        .into_iter()
        .map(|(e, r)| match r == Default::default() {
            true => (e, whole.clone()),
            false => (e, r),
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(d: Delivery, hosts: &[&str]) -> Route {
        Route {
            delivery: d,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            placeholder: Placeholder::Random,
            in_body: false,
            repos: None,
        }
    }

    #[test]
    fn bodies_belong_to_proxy_secrets() {
        let mut r = route(Delivery::Env, &[]);
        r.in_body = true;
        assert!(r.validate("K").is_err());
        let mut r = route(Delivery::Proxy, &["api.example.com"]);
        r.in_body = true;
        r.validate("K").unwrap();
        // A route without it serialises as before (rows keep opening).
        r.in_body = false;
        assert!(!r.to_column().contains("in_body"));
        // Changing the delivery away from proxy drops it.
        let change = RouteChange {
            delivery: Some(Delivery::Env),
            ..RouteChange::default()
        };
        r.in_body = true;
        assert!(!change.apply(Some(&r)).in_body);
    }

    #[test]
    fn hosts_are_checked_and_canonical() {
        let mut r = route(
            Delivery::Proxy,
            &["API.Stripe.com", "api.stripe.com", "*.example.com:8443"],
        );
        r.validate("K").unwrap();
        assert_eq!(r.hosts, ["*.example.com:8443", "api.stripe.com"]);
        for bad in [
            "",
            "*.com",
            "a..b",
            "-a.com",
            "a.com:0",
            "a.com:99999",
            "*",
            "a/b",
            "a b",
        ] {
            assert!(
                route(Delivery::Proxy, &[bad]).validate("K").is_err(),
                "{bad}"
            );
        }
        assert!(route(Delivery::Proxy, &[]).validate("K").is_err());
        assert!(route(Delivery::Env, &["a.com"]).validate("K").is_err());
        assert!(route(Delivery::Setup, &[]).validate("K").is_ok());
    }

    #[test]
    fn vendor_hosts_cover_exact_names_and_patterns() {
        let r = route(Delivery::Proxy, &["api.stripe.com"]);
        assert!(r.within(&["api.stripe.com"]));
        assert!(!r.within(&["files.stripe.com"]));
        let aws = route(
            Delivery::Proxy,
            &["s3.amazonaws.com", "*.eu.amazonaws.com:443"],
        );
        assert!(aws.within(&["*.amazonaws.com"]));
        assert!(!route(Delivery::Proxy, &["amazonaws.com"]).within(&["*.amazonaws.com"]));
        assert!(!route(Delivery::Proxy, &["evilamazonaws.com"]).within(&["*.amazonaws.com"]));
        assert!(!route(Delivery::Proxy, &[]).within(&["*.amazonaws.com"]));
    }

    #[test]
    fn placeholders_are_fresh_and_keep_a_prefix_on_request() {
        let a = placeholder(Placeholder::Random, b"x").unwrap();
        let b = placeholder(Placeholder::Random, b"x").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), b.len());
        let v = b"sk_test_0123456789abcdefghijklmnop";
        let p = placeholder(Placeholder::KeepPrefix, v).unwrap();
        assert!(p.starts_with("sk_test_"), "{p}");
        assert_eq!(p.len(), v.len());
        let g = placeholder(Placeholder::KeepPrefix, b"ghp_abc").unwrap();
        assert!(g.starts_with("ghp_") && g.len() == 4 + 22, "{g}");
    }

    #[test]
    fn the_column_is_empty_for_env_and_round_trips() {
        assert_eq!(Route::default().to_column(), "");
        let r = route(Delivery::Proxy, &["api.stripe.com"]);
        assert_eq!(Route::from_column(&r.to_column()), r);
        assert_eq!(Route::from_column("garbage"), Route::default());
    }
}
