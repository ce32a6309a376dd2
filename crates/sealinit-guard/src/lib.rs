//! The production-credential guard. Sandboxes get staging credentials and
//! non-production secrets only; this crate recognises the shapes of live
//! and production credentials, from the vendors' documented formats, so
//! that every place a value enters the store can refuse one (or warn).
//!
//! One pass over a value: an Aho-Corasick automaton finds every rule's
//! prefixes at once, and only those candidates are checked against the
//! rule's full shape (lengths, alphabets, GitHub's and npm's CRC-32
//! checksum). No regular expressions, no allocation per byte.
//!
//! Extending the table: add a [`Rule`] to [`RULES`] with its prefixes and a
//! shape function, and three tests (a live shape, a non-production shape,
//! a near miss) in `tests`.
//!
//! Nothing here ever returns or formats a value: a [`Finding`] names the
//! secret and the rule.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use aho_corasick::packed;

/// What a hit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The value is refused unless allowed explicitly.
    Refuse,
    /// The value is stored, with a warning.
    Warn,
}

/// One kind of live or production credential.
#[derive(Debug)]
pub struct Rule {
    /// A stable name, shown in messages, the audit trail and `secrets scan`.
    pub id: &'static str,
    pub level: Level,
    /// What it recognises: "a live Stripe secret key".
    pub what: &'static str,
    /// What to do instead.
    pub advice: &'static str,
    /// The vendor's API hosts: a value delivered only through the egress
    /// proxy to these never enters a sandbox, so the rule lets it in.
    pub hosts: &'static [&'static str],
    /// Where a candidate starts.
    prefixes: &'static [&'static str],
    /// The prefix must not follow a letter or digit (a token, not part of
    /// a longer word).
    bounded: bool,
    /// Whether the bytes after a prefix complete a credential.
    shape: fn(rest: &[u8]) -> bool,
}

/// One secret that hit one rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub name: String,
    #[serde(serialize_with = "rule_id")]
    pub rule: &'static Rule,
}

fn rule_id<S: serde::Serializer>(rule: &&'static Rule, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(rule.id)
}

/// The rules, in the order findings are reported.
pub static RULES: &[Rule] = &[
    Rule {
        id: "stripe-live-key",
        level: Level::Refuse,
        what: "a live Stripe secret or restricted key",
        advice: "use a test-mode key (sk_test_..., rk_test_...)",
        hosts: &["api.stripe.com", "files.stripe.com"],
        prefixes: &["sk_live_", "rk_live_"],
        bounded: true,
        shape: |r| at_least(r, 10, alnum),
    },
    Rule {
        id: "aws-access-key-id",
        level: Level::Refuse,
        what: "an AWS long-term access key id",
        advice: "use a staging account's credentials, or short-lived ones from a role",
        hosts: &["*.amazonaws.com"],
        prefixes: &["AKIA"],
        bounded: true,
        shape: |r| exact(r, 16, upper_digit) && &r[9..16] != b"EXAMPLE",
    },
    Rule {
        id: "aws-secret-access-key",
        level: Level::Refuse,
        what: "an AWS secret access key",
        advice: "use a staging account's credentials, or short-lived ones from a role",
        hosts: &["*.amazonaws.com"],
        prefixes: &["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"],
        bounded: false,
        shape: aws_secret_assignment,
    },
    Rule {
        id: "github-token",
        level: Level::Refuse,
        what: "a GitHub token",
        advice: "use a token of a test account or a GitHub App installed on test repositories only",
        hosts: &["api.github.com", "github.com", "uploads.github.com"],
        prefixes: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        bounded: true,
        shape: |r| exact(r, 36, alnum) && checksum_ok(&r[..36]),
    },
    Rule {
        id: "github-fine-grained-token",
        level: Level::Refuse,
        what: "a GitHub fine-grained personal access token",
        advice: "use a token of a test account, scoped to test repositories",
        hosts: &["api.github.com", "github.com", "uploads.github.com"],
        prefixes: &["github_pat_"],
        bounded: true,
        shape: |r| exact(r, 82, word) && r[22] == b'_',
    },
    Rule {
        id: "gitlab-token",
        level: Level::Refuse,
        what: "a GitLab personal access token",
        advice: "use a token of a test account or a project token of a test project",
        hosts: &["gitlab.com"],
        prefixes: &["glpat-"],
        bounded: true,
        shape: |r| at_least(r, 20, token),
    },
    Rule {
        id: "slack-token",
        level: Level::Refuse,
        what: "a Slack bot, user or refresh token",
        advice: "use a token of a test workspace",
        hosts: &["slack.com", "*.slack.com"],
        prefixes: &["xoxb-", "xoxp-", "xoxe-", "xoxe.xoxp-"],
        bounded: true,
        shape: |r| at_least(r, 20, |b| alnum(b) || b == b'-'),
    },
    Rule {
        id: "openai-key",
        level: Level::Refuse,
        what: "an OpenAI API key",
        advice: "use a key of a separate project with a low spending limit",
        hosts: &["api.openai.com"],
        prefixes: &["sk-"],
        bounded: true,
        shape: openai,
    },
    Rule {
        id: "anthropic-key",
        level: Level::Refuse,
        what: "an Anthropic API key",
        advice: "use a key of a separate workspace with a low spending limit",
        hosts: &["api.anthropic.com"],
        prefixes: &["sk-ant-api03-", "sk-ant-admin01-"],
        bounded: true,
        shape: |r| at_least(r, 80, token),
    },
    Rule {
        id: "google-api-key",
        level: Level::Refuse,
        what: "a Google API key",
        advice: "use a key of a test project, restricted to the APIs the tests call",
        hosts: &["*.googleapis.com"],
        prefixes: &["AIza"],
        bounded: true,
        shape: |r| exact(r, 35, token),
    },
    Rule {
        id: "npm-token",
        level: Level::Refuse,
        what: "an npm access token",
        advice: "use a read-only token of a test account, or none (a local registry)",
        hosts: &["registry.npmjs.org"],
        prefixes: &["npm_"],
        bounded: true,
        shape: |r| exact(r, 36, alnum) && checksum_ok(&r[..36]),
    },
    Rule {
        id: "pypi-token",
        level: Level::Refuse,
        what: "a PyPI API token",
        advice: "use a TestPyPI token (pypi-AgENdGVzdC5weXBp...)",
        // "pypi-" and the base64 of the macaroon's "pypi.org" location:
        // TestPyPI's tokens name test.pypi.org and pass.
        hosts: &["upload.pypi.org"],
        prefixes: &["pypi-AgEIcHlwaS5vcmc"],
        bounded: true,
        shape: |r| at_least(r, 50, token),
    },
    Rule {
        id: "sendgrid-key",
        level: Level::Refuse,
        what: "a SendGrid API key",
        advice: "use a key of a test subuser with sandbox mode on",
        hosts: &["api.sendgrid.com"],
        prefixes: &["SG."],
        bounded: true,
        shape: |r| {
            r.len() >= 66 && all(&r[..22], token) && r[22] == b'.' && exact(&r[23..], 43, token)
        },
    },
    Rule {
        id: "sealinit-token",
        level: Level::Refuse,
        what: "a token of this secrets service (sealctl serve)",
        advice: "a sandbox must not hold a key to the secret store itself; mint bundles from the orchestrator instead",
        hosts: &[],
        prefixes: &["sit_"],
        bounded: true,
        shape: |r| exact(r, 36, alnum) && checksum_ok(&r[..36]),
    },
    Rule {
        id: "private-key",
        level: Level::Refuse,
        what: "a PEM private key",
        advice: "generate a throwaway key for the sandbox",
        hosts: &[],
        prefixes: &["-----BEGIN "],
        bounded: false,
        shape: pem_private,
    },
    Rule {
        id: "database-url",
        level: Level::Warn,
        what: "a database URL whose host is not local or whose name says production",
        advice: "point the sandbox at a staging or local database",
        hosts: &[],
        prefixes: &[
            "postgres://",
            "postgresql://",
            "mysql://",
            "mariadb://",
            "mongodb://",
            "mongodb+srv://",
            "redis://",
            "rediss://",
            "amqp://",
            "amqps://",
        ],
        bounded: false,
        shape: database_url,
    },
];

/// The searcher over every rule's prefixes (SIMD "Teddy", with Rabin-Karp
/// for short values), and the rule of each pattern.
fn searcher() -> &'static (packed::Searcher, Vec<usize>) {
    static SEARCHER: OnceLock<(packed::Searcher, Vec<usize>)> = OnceLock::new();
    SEARCHER.get_or_init(|| {
        let mut builder = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostLongest)
            .builder();
        let mut rule_of = Vec::new();
        for (i, rule) in RULES.iter().enumerate() {
            for p in rule.prefixes {
                builder.add(p);
                rule_of.push(i);
            }
        }
        let searcher = builder
            .build()
            .expect("the guard's prefixes build a searcher");
        (searcher, rule_of)
    })
}

/// The rules `value` hits, each once, in table order.
pub fn check(value: &[u8]) -> Vec<&'static Rule> {
    rules_in(hits(value)).collect()
}

/// The rules of a [`hits`] mask, in table order.
fn rules_in(mask: u32) -> impl Iterator<Item = &'static Rule> {
    RULES
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| r)
}

/// The rules `value` hits, as a mask of indexes into [`RULES`]: one pass,
/// no allocation.
fn hits(value: &[u8]) -> u32 {
    const _: () = assert!(RULES.len() <= 32);
    let (searcher, rule_of) = searcher();
    let mut mask = 0u32;
    // Leftmost-longest: where prefixes share a start (`sk-`,
    // `sk-ant-api03-`), the longer one is the candidate; a rejected
    // candidate consumes only its prefix.
    for m in searcher.find_iter(value) {
        let i = rule_of[m.pattern().as_usize()];
        let rule = &RULES[i];
        if mask & (1 << i) != 0 || (rule.bounded && m.start() > 0 && alnum(value[m.start() - 1])) {
            continue;
        }
        if (rule.shape)(&value[m.end()..]) {
            mask |= 1 << i;
        }
    }
    mask
}

/// The findings of a set of secrets given together (one `set`, one
/// import, one bundle): each value's rules, and a bare AWS secret access
/// key (40 characters of its alphabet) in a secret named like one, or next
/// to an AWS access key id.
pub fn check_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<Finding> {
    let key_id_rule = RULES
        .iter()
        .position(|r| r.id == "aws-access-key-id")
        .expect("in the table");
    let secret_rule = RULES
        .iter()
        .position(|r| r.id == "aws-secret-access-key")
        .expect("in the table");
    let mut findings = Vec::new();
    let mut key_id = false;
    // Bare 40-character values, judged once every key id is known.
    let mut bare = Vec::new();
    for (name, value) in entries {
        let mask = hits(value);
        if mask != 0 {
            key_id |= mask & (1 << key_id_rule) != 0;
            for rule in rules_in(mask) {
                findings.push(Finding {
                    name: name.to_owned(),
                    rule,
                });
            }
        }
        if value.len() >= 40 && mask & (1 << secret_rule) == 0 && bare_aws_secret(value) {
            bare.push(name);
        }
    }
    for name in bare {
        let named = name.to_ascii_uppercase().contains("SECRET_ACCESS_KEY");
        if key_id || named {
            findings.push(Finding {
                name: name.to_owned(),
                rule: &RULES[secret_rule],
            });
        }
    }
    findings
}

// Shapes -----------------------------------------------------------------

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn word(b: u8) -> bool {
    alnum(b) || b == b'_'
}

/// Base64url and the like: letters, digits, `-`, `_`.
fn token(b: u8) -> bool {
    alnum(b) || b == b'-' || b == b'_'
}

fn all(bytes: &[u8], class: fn(u8) -> bool) -> bool {
    bytes.iter().all(|&b| class(b))
}

/// `n` bytes of `class`, then the end or a byte outside it.
fn exact(r: &[u8], n: usize, class: fn(u8) -> bool) -> bool {
    r.len() >= n && all(&r[..n], class) && r.get(n).is_none_or(|&b| !class(b))
}

/// At least `n` bytes of `class`.
fn at_least(r: &[u8], n: usize, class: fn(u8) -> bool) -> bool {
    r.len() >= n && all(&r[..n], class)
}

fn aws_alphabet(b: u8) -> bool {
    alnum(b) || b == b'/' || b == b'+'
}

/// 40 characters of the secret key's alphabet, with upper and lower case
/// and a digit (so that a word or a hex digest does not pass for one), and
/// not AWS's documented example.
fn bare_aws_secret(value: &[u8]) -> bool {
    let v = value.trim_ascii();
    v.len() == 40
        && all(v, aws_alphabet)
        && v.iter().any(u8::is_ascii_uppercase)
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter().any(u8::is_ascii_digit)
        && !v.ends_with(b"EXAMPLEKEY")
}

/// `aws_secret_access_key = KEY` (a credentials file or an env line).
fn aws_secret_assignment(r: &[u8]) -> bool {
    fn skip(r: &[u8]) -> &[u8] {
        let n = r
            .iter()
            .take_while(|&&b| matches!(b, b' ' | b'\t' | b'"' | b'\''))
            .count();
        &r[n..]
    }
    let r = skip(r);
    let Some((&sep, r)) = r.split_first() else {
        return false;
    };
    if sep != b'=' && sep != b':' {
        return false;
    }
    let r = skip(r);
    exact(r, 40, aws_alphabet) && bare_aws_secret(&r[..40])
}

/// OpenAI (after `sk-`): project, service-account and admin keys; legacy
/// keys carry "T3BlbkFJ" (base64 of "OpenAI") in the middle. Anthropic's
/// `sk-ant-` keys fit neither (they have their own rule).
fn openai(r: &[u8]) -> bool {
    for kind in [&b"proj-"[..], b"svcacct-", b"admin-"] {
        if let Some(rest) = r.strip_prefix(kind) {
            return at_least(rest, 40, token);
        }
    }
    exact(r, 48, alnum) && &r[20..28] == b"T3BlbkFJ"
}

/// GitHub's and npm's token checksum: the last 6 characters are the
/// base62 CRC-32 of the 30 before them.
fn checksum_ok(body: &[u8]) -> bool {
    let (random, sum) = body.split_at(30);
    checksum(random).as_slice() == sum
}

/// The checksum GitHub's and npm's tokens end with: the CRC-32 of the
/// random part in base 62, 6 characters. (sealctl's own service tokens
/// carry one too, so that scanners can tell them from look-alikes.)
pub fn checksum(random: &[u8]) -> [u8; 6] {
    base62_6(crc32(random))
}

pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// `n` in base 62 (`0-9A-Za-z`), left-padded with `0` to 6 characters.
pub(crate) fn base62_6(mut n: u32) -> [u8; 6] {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// `-----BEGIN [RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP ]PRIVATE KEY[ BLOCK]-----`.
fn pem_private(r: &[u8]) -> bool {
    let n = r
        .iter()
        .take(40)
        .take_while(|&&b| b.is_ascii_uppercase() || b == b' ')
        .count();
    let (label, rest) = r.split_at(n);
    (label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
        && rest.starts_with(b"-----")
}

/// A database URL (after its scheme) whose host is not local, or whose
/// host, user or database name says production. Local: no host (a Unix
/// socket), `localhost`, loopback addresses, `host.docker.internal`, and
/// names without a dot (a container network's service names).
fn database_url(r: &[u8]) -> bool {
    // A connection string fits in 512 bytes: looking further would make a
    // long value cost more than one pass.
    let r = &r[..r.len().min(512)];
    let end = r
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\''))
        .unwrap_or(r.len());
    let url = &r[..end];
    let auth_end = url
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(url.len());
    let authority = &url[..auth_end];
    let (user, hosts) = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => (&authority[..at], &authority[at + 1..]),
        None => (&b""[..], authority),
    };
    let user = user.split(|&b| b == b':').next().unwrap_or_default();
    let path = &url[auth_end..];
    let db = path
        .strip_prefix(b"/")
        .map(|p| {
            p.split(|b| matches!(b, b'/' | b'?' | b'#'))
                .next()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    // Several hosts: `h1:5432,h2:5432`.
    let hosts: Vec<&[u8]> = hosts.split(|&b| b == b',').collect();
    hosts.iter().any(|h| !local_host(h))
        || says_production(user)
        || says_production(db)
        || hosts.iter().any(|h| says_production(h))
}

fn local_host(host_port: &[u8]) -> bool {
    let host = match host_port.first() {
        Some(b'[') => {
            let close = host_port
                .iter()
                .position(|&b| b == b']')
                .unwrap_or(host_port.len());
            &host_port[1..close]
        }
        _ => host_port.split(|&b| b == b':').next().unwrap_or_default(),
    };
    let host = &host[..host.len().min(255)];
    let host = host.to_ascii_lowercase();
    host.is_empty()
        || host == b"localhost"
        || host.ends_with(b".localhost")
        || host == b"::1"
        || host == b"0.0.0.0"
        || host.starts_with(b"127.")
        || host == b"host.docker.internal"
        || host.starts_with(b"%2f") // a percent-encoded socket path
        || !host.contains(&b'.')
}

/// `prod`, `production` or `live` as a word (`app_prod`, `prod-db`), not
/// inside one (`productivity`, `delivery`).
fn says_production(s: &[u8]) -> bool {
    s.split(|b| !b.is_ascii_alphanumeric()).any(|w| {
        [&b"prod"[..], b"production", b"live", b"prd"]
            .iter()
            .any(|p| w.eq_ignore_ascii_case(p))
    })
}

#[cfg(test)]
mod tests;
