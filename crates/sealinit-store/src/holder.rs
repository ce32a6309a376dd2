//! What holds secrets besides a repository (issue #27): a repository's
//! environments (`staging`, `production`), whose secrets win over the
//! repository's in a launch that names one, and an owner's (an
//! organisation's) secrets, which every repository of the owner, or those
//! selected, receives unless it has a secret of the same name.
//!
//! Each is kept as the store keeps its own keys: under a name that no
//! repository can have (starting with [`crate::OWN_PREFIX`]), with a data
//! key, versions, history and audit of its own; every write path of a
//! repository serves it unchanged.

use crate::{Result, StoreError, validate_repo};

/// What a holder key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Repo(String),
    /// A repository's environment.
    Env {
        repo: String,
        env: String,
    },
    /// An owner's secrets: `acme` for `acme/api`.
    Org(String),
}

const ENV: &str = "!env:";
const ORG: &str = "!org:";

impl Holder {
    /// The holder a key names (a repository's name is its own key).
    pub fn of(key: &str) -> Self {
        if let Some(rest) = key.strip_prefix(ENV) {
            if let Some((repo, env)) = rest.rsplit_once(':') {
                return Self::Env {
                    repo: repo.to_owned(),
                    env: env.to_owned(),
                };
            }
        }
        match key.strip_prefix(ORG) {
            Some(owner) => Self::Org(owner.to_owned()),
            None => Self::Repo(key.to_owned()),
        }
    }

    /// The repository whose scopes decide access (for an owner: none).
    pub fn repo(&self) -> Option<&str> {
        match self {
            Self::Repo(r) | Self::Env { repo: r, .. } => Some(r),
            Self::Org(_) => None,
        }
    }
}

impl std::fmt::Display for Holder {
    /// As messages name it: `acme/api`, `environment staging of acme/api`,
    /// `organisation acme`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Repo(r) => f.write_str(r),
            Self::Env { repo, env } => write!(f, "environment {env} of {repo}"),
            Self::Org(o) => write!(f, "organisation {o}"),
        }
    }
}

/// The key of `repo`'s environment `env` (environments compare
/// case-insensitively, as GitHub's do).
pub fn env_key(repo: &str, env: &str) -> String {
    format!("{ENV}{repo}:{}", env.to_ascii_lowercase())
}

/// The key of `owner`'s secrets (owners compare case-insensitively).
pub fn org_key(owner: &str) -> String {
    format!("{ORG}{}", owner.to_ascii_lowercase())
}

/// The owner of a repository: its first segment.
pub fn owner_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// An environment's name: 1 to 100 letters, digits, `-`, `_` or `.`.
pub fn validate_env(env: &str) -> Result<()> {
    let ok = (1..=100).contains(&env.len())
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match ok {
        true => Ok(()),
        false => Err(StoreError::InvalidRepo(format!(
            "environment {env:?} is not a name of 1 to 100 letters, digits, '-', '_' or '.'"
        ))),
    }
}

/// An owner's name: as a repository name's first segment.
pub fn validate_owner(owner: &str) -> Result<()> {
    validate_repo(&format!("{owner}/x")).map_err(|_| {
        StoreError::InvalidRepo(format!(
            "owner {owner:?} is not a name of letters, digits, '-', '_' or '.'"
        ))
    })
}

/// Checks a key: a repository's name, or a holder's key of valid parts.
pub fn validate_key(key: &str) -> Result<()> {
    match Holder::of(key) {
        Holder::Repo(r) => validate_repo(&r),
        Holder::Env { repo, env } => validate_repo(&repo).and_then(|()| validate_env(&env)),
        Holder::Org(o) => validate_owner(&o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_holders() {
        let k = env_key("acme/api", "Staging");
        assert_eq!(k, "!env:acme/api:staging");
        assert_eq!(
            Holder::of(&k),
            Holder::Env {
                repo: "acme/api".into(),
                env: "staging".into()
            }
        );
        assert_eq!(Holder::of(&org_key("ACME")), Holder::Org("acme".into()));
        assert_eq!(Holder::of("acme/api"), Holder::Repo("acme/api".into()));
        assert_eq!(
            Holder::of(&k).to_string(),
            "environment staging of acme/api"
        );
        assert!(validate_key(&env_key("acme/api", "prod:x")).is_err());
        assert!(validate_key(&org_key("acme")).is_ok());
        assert!(validate_key("!service").is_err());
        assert_eq!(owner_of("group/sub/name"), "group");
    }
}
