//! Token scopes: `ACTION:PATTERN` with a repository pattern, or `admin`.
//!
//! - `write:PATTERN`: set, remove, roll back, import; list metadata.
//! - `launch:PATTERN`: mint bundles; list metadata.
//! - `audit:PATTERN`: read the audit trail of those repositories.
//! - `admin`: everything, every repository, and tokens.
//!
//! A pattern is `*` (every repository, and every owner's secrets),
//! `owner/*` (every repository under `owner/`, nested groups included, and
//! their environments), one repository (and its environments), or `owner`
//! alone (the owner's, the organisation's, secrets); names compare
//! case-insensitively. No scope returns a stored value.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Write,
    Launch,
    Audit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Repo { action: Action, pattern: String },
}

impl Scope {
    /// Parses `admin` or `ACTION:PATTERN`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "admin" {
            return Ok(Self::Admin);
        }
        let Some((action, pattern)) = text.split_once(':') else {
            return Err(format!(
                "scope {text:?} is not `admin` or ACTION:PATTERN (write:acme/*, launch:acme/api, audit:*)"
            ));
        };
        let action = match action {
            "write" => Action::Write,
            "launch" => Action::Launch,
            "audit" => Action::Audit,
            other => {
                return Err(format!(
                    "scope {text:?}: unknown action {other:?}; use write, launch, audit, or admin"
                ));
            }
        };
        let valid = pattern == "*"
            || match pattern.strip_suffix("/*") {
                Some(owner) => sealinit_store::holder::validate_owner(owner).is_ok(),
                None if !pattern.contains('/') => {
                    sealinit_store::holder::validate_owner(pattern).is_ok()
                }
                None => sealinit_store::validate_repo(pattern).is_ok(),
            };
        if !valid {
            return Err(format!(
                "scope {text:?}: the pattern must be `*`, `owner/*`, a repository (owner/name) or an owner (its organisation secrets)"
            ));
        }
        Ok(Self::Repo {
            action,
            pattern: pattern.to_ascii_lowercase(),
        })
    }

    fn matches(pattern: &str, repo: &str) -> bool {
        let repo = repo.to_ascii_lowercase();
        match pattern.strip_suffix('*') {
            Some("") => true,
            Some(prefix) => repo.starts_with(prefix),
            None => repo == pattern,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Repo { action, pattern } => {
                let a = match action {
                    Action::Write => "write",
                    Action::Launch => "launch",
                    Action::Audit => "audit",
                };
                write!(f, "{a}:{pattern}")
            }
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone)]
pub struct Grants(pub Vec<Scope>);

impl Grants {
    /// Parses a token's stored scopes (all valid when it was made).
    pub fn from_stored(scopes: &[String]) -> Self {
        Self(scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect())
    }

    pub fn is_admin(&self) -> bool {
        self.0.contains(&Scope::Admin)
    }

    /// Whether `action` on `repo` (a repository, one of its environments,
    /// or an owner's secrets: a store holder key) is allowed.
    pub fn allows(&self, action: Action, repo: &str) -> bool {
        use sealinit_store::holder::Holder;
        let holder = Holder::of(repo);
        self.0.iter().any(|s| match (s, &holder) {
            (Scope::Admin, _) => true,
            (Scope::Repo { action: a, .. }, _) if *a != action => false,
            (Scope::Repo { pattern, .. }, Holder::Org(owner)) => {
                pattern == "*" || pattern.eq_ignore_ascii_case(owner)
            }
            (Scope::Repo { pattern, .. }, Holder::Repo(r) | Holder::Env { repo: r, .. }) => {
                Scope::matches(pattern, r)
            }
        })
    }

    /// Whether the token may read any audit record (admin or an `audit:`
    /// scope).
    pub fn audits_any(&self) -> bool {
        self.0.iter().any(|s| match s {
            Scope::Admin => true,
            Scope::Repo { action, .. } => *action == Action::Audit,
        })
    }

    /// Whether the token may see `repo`'s metadata (write or launch).
    pub fn sees(&self, repo: &str) -> bool {
        self.allows(Action::Write, repo) || self.allows(Action::Launch, repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(s: &[&str]) -> Grants {
        Grants(s.iter().map(|s| Scope::parse(s).unwrap()).collect())
    }

    #[test]
    fn patterns() {
        let g = grants(&["write:acme/*", "launch:Other/API", "audit:*"]);
        assert!(g.allows(Action::Write, "acme/api"));
        assert!(g.allows(Action::Write, "ACME/group/sub"));
        assert!(!g.allows(Action::Write, "acmeco/api"));
        assert!(!g.allows(Action::Launch, "acme/api"));
        assert!(g.allows(Action::Launch, "other/api"));
        assert!(!g.allows(Action::Launch, "other/api2"));
        assert!(g.allows(Action::Audit, "any/thing"));
        assert!(g.sees("acme/x") && g.sees("other/api") && !g.sees("any/thing"));
        assert!(grants(&["admin"]).allows(Action::Write, "x/y"));
    }

    #[test]
    fn bad_scopes_say_why() {
        for (s, why) in [
            ("read:*", "unknown action"),
            ("write", "not `admin`"),
            ("write:ac me", "the pattern"),
            ("write:*/x", "the pattern"),
        ] {
            assert!(Scope::parse(s).unwrap_err().contains(why), "{s}");
        }
        assert_eq!(
            Scope::parse("write:Acme/*").unwrap().to_string(),
            "write:acme/*"
        );
    }

    #[test]
    fn an_owner_alone_is_its_organisation_secrets() {
        use sealinit_store::holder::{env_key, org_key};
        let org = Grants(vec![Scope::parse("write:Acme").unwrap()]);
        assert!(org.allows(Action::Write, &org_key("acme")));
        assert!(!org.allows(Action::Write, "acme/api"));
        let repos = Grants(vec![Scope::parse("write:acme/*").unwrap()]);
        assert!(!repos.allows(Action::Write, &org_key("acme")));
        assert!(repos.allows(Action::Write, &env_key("acme/api", "staging")));
        assert!(!repos.allows(Action::Launch, &env_key("acme/api", "staging")));
        let all = Grants(vec![Scope::parse("write:*").unwrap()]);
        assert!(all.allows(Action::Write, &org_key("other")));
    }
}
