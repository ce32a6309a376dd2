//! Each rule: a live shape, a non-production shape, a near miss. The
//! live-looking fixtures are built here from pieces at run time, so the
//! repository never holds a string that a secret scanner or push
//! protection would flag, and no assertion message ever prints one.

use super::*;

/// A deterministic stream of characters from `alphabet`.
struct Gen(u64);

impl Gen {
    fn run(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                alphabet[(self.0 % alphabet.len() as u64) as usize] as char
            })
            .collect()
    }
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const UPPER_DIGIT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const TOKEN: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";
const AWS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/+";

fn join(parts: &[&str]) -> String {
    parts.concat()
}

/// A GitHub- or npm-style token body: 30 random characters and their
/// checksum.
fn with_checksum(g: &mut Gen) -> String {
    let random = g.run(30, ALNUM);
    let sum = base62_6(crc32(random.as_bytes()));
    random + std::str::from_utf8(&sum).unwrap()
}

fn rules_of(value: &str) -> Vec<&'static str> {
    check(value.as_bytes()).iter().map(|r| r.id).collect()
}

/// `value` hits `rule` (and the message never shows the value).
fn hits(rule: &str, value: &str, case: &str) {
    let got = rules_of(value);
    assert!(
        got.contains(&rule),
        "{rule}: {case} not recognised (got {got:?})"
    );
}

fn passes(rule: &str, value: &str, case: &str) {
    let got = rules_of(value);
    assert!(!got.contains(&rule), "{rule}: {case} wrongly recognised");
}

struct Case {
    rule: &'static str,
    live: String,
    non_production: String,
    near_miss: String,
}

fn cases() -> Vec<Case> {
    let mut g = Gen(0x5ea1_1417_2026_1201);
    let mut v = Vec::new();
    let mut add = |rule, live, non_production, near_miss| {
        v.push(Case {
            rule,
            live,
            non_production,
            near_miss,
        })
    };
    add(
        "stripe-live-key",
        join(&["sk_", "live_", &g.run(24, ALNUM)]),
        join(&["sk_", "test_", &g.run(24, ALNUM)]),
        join(&["sk_", "live_", &g.run(6, ALNUM)]),
    );
    add(
        "stripe-live-key",
        join(&["rk_", "live_", &g.run(24, ALNUM)]),
        join(&["rk_", "test_", &g.run(24, ALNUM)]),
        join(&["xrk_", "live_", &g.run(24, ALNUM)]),
    );
    add(
        "aws-access-key-id",
        join(&["AK", "IA", &g.run(16, UPPER_DIGIT)]),
        join(&["AK", "IA", "IOSFODNN7", "EXAMPLE"]),
        join(&["AK", "IA", &g.run(15, UPPER_DIGIT)]),
    );
    add(
        "aws-secret-access-key",
        join(&["aws_secret_access_key = ", &g.run(36, AWS), "Ab1/"]),
        join(&[
            "aws_secret_access_key = ",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCY",
            "EXAMPLEKEY",
        ]),
        join(&["aws_secret_access_key = ", &g.run(39, AWS)]),
    );
    add(
        "github-token",
        join(&["gh", "p_", &with_checksum(&mut g)]),
        // The same shape with a checksum that does not match: a random
        // look-alike, as test fixtures and placeholders are.
        join(&["gh", "p_", &g.run(36, ALNUM)]),
        join(&["gh", "x_", &with_checksum(&mut g)]),
    );
    add(
        "github-token",
        join(&["gh", "s_", &with_checksum(&mut g)]),
        join(&["gh", "s_", "000000000000000000000000000000", "zzzzzz"]),
        join(&["gh", "s_", &with_checksum(&mut g), "x"]),
    );
    add(
        "github-fine-grained-token",
        join(&["github", "_pat_", &g.run(22, ALNUM), "_", &g.run(59, ALNUM)]),
        join(&["github", "_pat_", "<your token here>"]),
        join(&["github", "_pat_", &g.run(22, ALNUM), "_", &g.run(50, ALNUM)]),
    );
    add(
        "gitlab-token",
        join(&["gl", "pat-", &g.run(20, TOKEN)]),
        join(&["gl", "dt-", &g.run(20, TOKEN)]),
        join(&["gl", "pat-", &g.run(12, TOKEN)]),
    );
    add(
        "slack-token",
        join(&[
            "xo",
            "xb-",
            &g.run(12, b"0123456789"),
            "-",
            &g.run(24, ALNUM),
        ]),
        join(&[
            "xo",
            "xa-",
            &g.run(12, b"0123456789"),
            "-",
            &g.run(24, ALNUM),
        ]),
        join(&["xo", "xb-", "test"]),
    );
    add(
        "openai-key",
        join(&["sk", "-proj-", &g.run(60, TOKEN)]),
        join(&["sk", "-proj-", "PLACEHOLDER"]),
        join(&["sk", "-", &g.run(20, ALNUM), "NotOpen", &g.run(21, ALNUM)]),
    );
    add(
        "openai-key",
        join(&[
            "sk",
            "-",
            &g.run(20, ALNUM),
            "T3Blbk",
            "FJ",
            &g.run(20, ALNUM),
        ]),
        join(&["sk", "-", "test"]),
        join(&[
            "sk",
            "-",
            &g.run(20, ALNUM),
            "T3Blbk",
            "FJ",
            &g.run(19, ALNUM),
        ]),
    );
    add(
        "anthropic-key",
        join(&["sk", "-ant-", "api03-", &g.run(93, TOKEN)]),
        join(&["sk", "-ant-", "api03-", "REPLACE_ME"]),
        join(&["sk", "-ant-", "api02-", &g.run(93, TOKEN)]),
    );
    add(
        "google-api-key",
        join(&["AI", "za", &g.run(35, TOKEN)]),
        join(&["AI", "za", "your-key"]),
        join(&["AI", "za", &g.run(34, TOKEN)]),
    );
    add(
        "npm-token",
        join(&["np", "m_", &with_checksum(&mut g)]),
        join(&["np", "m_", &g.run(36, ALNUM)]),
        join(&["np", "m_", &with_checksum(&mut g)[..35]]),
    );
    add(
        "pypi-token",
        join(&["py", "pi-", "AgEIcHlwaS5vcmc", &g.run(60, TOKEN)]),
        join(&["py", "pi-", "AgENdGVzdC5weXBpLm9yZw", &g.run(60, TOKEN)]),
        join(&["py", "pi-", "AgEIcHlwaS5vcmc", &g.run(20, TOKEN)]),
    );
    add(
        "sendgrid-key",
        join(&["S", "G.", &g.run(22, TOKEN), ".", &g.run(43, TOKEN)]),
        join(&["S", "G.", "sandbox"]),
        join(&["S", "G.", &g.run(22, TOKEN), ".", &g.run(40, TOKEN)]),
    );
    add(
        "sealinit-token",
        join(&["si", "t_", &with_checksum(&mut g)]),
        join(&["si", "t_", &g.run(36, ALNUM)]),
        join(&["si", "t_", &with_checksum(&mut g)[..30]]),
    );
    add(
        "private-key",
        join(&[
            "-----BEGIN ",
            "RSA PRIVATE",
            " KEY-----\nMIIE",
            &g.run(64, AWS),
        ]),
        join(&["-----BEGIN ", "PUBLIC", " KEY-----\nMIIB", &g.run(64, AWS)]),
        join(&["BEGIN ", "PRIVATE", " KEY ", &g.run(64, AWS)]),
    );
    add(
        "private-key",
        join(&["-----BEGIN ", "OPENSSH PRIVATE", " KEY-----\n"]),
        join(&["-----BEGIN ", "CERTIFICATE-----\n"]),
        join(&["-----BEGIN ", "PRIVATE KEY ", "-----\n"]),
    );
    add(
        "database-url",
        join(&[
            "postgres://app:",
            &g.run(12, ALNUM),
            "@db.internal.example.com:5432/app",
        ]),
        join(&[
            "postgres://app:",
            &g.run(12, ALNUM),
            "@localhost:5432/app_staging",
        ]),
        join(&["postgres://app@127.0.0.1/productivity"]),
    );
    add(
        "database-url",
        join(&["mysql://root@localhost/shop_", "prod"]),
        join(&["mysql://root@db:3306/shop_test"]),
        join(&["mysql://root@[::1]:3306/delivery"]),
    );
    v
}

#[test]
fn every_rule_has_a_live_a_non_production_and_a_near_miss_case() {
    let cases = cases();
    for rule in RULES {
        assert!(
            cases.iter().any(|c| c.rule == rule.id),
            "rule {} has no test cases",
            rule.id
        );
    }
    for c in &cases {
        hits(c.rule, &c.live, "live shape");
        passes(c.rule, &c.non_production, "non-production shape");
        passes(c.rule, &c.near_miss, "near miss");
        // Inside a larger value (an env file, a JSON document) too.
        hits(
            c.rule,
            &format!("X=1\nKEY={} # note\n", c.live),
            "live shape in a larger value",
        );
    }
}

#[test]
fn a_prefix_inside_a_longer_token_is_not_a_candidate() {
    let mut g = Gen(7);
    let id = join(&["AK", "IA", &g.run(16, UPPER_DIGIT)]);
    passes(
        "aws-access-key-id",
        &format!("x{id}"),
        "prefix inside a word",
    );
    hits(
        "aws-access-key-id",
        &format!("id={id}"),
        "after a separator",
    );
}

#[test]
fn a_bare_secret_access_key_counts_next_to_a_key_id_or_under_its_name() {
    let mut g = Gen(11);
    let id = join(&["AK", "IA", &g.run(16, UPPER_DIGIT)]);
    let secret = join(&[&g.run(36, AWS), "Ab1/"]);
    let ids = |f: &[Finding]| -> Vec<(String, &'static str)> {
        f.iter().map(|f| (f.name.clone(), f.rule.id)).collect()
    };
    let found = check_entries([("KEY_ID", id.as_bytes()), ("SECRET", secret.as_bytes())]);
    assert_eq!(
        ids(&found),
        [
            ("KEY_ID".to_owned(), "aws-access-key-id"),
            ("SECRET".to_owned(), "aws-secret-access-key")
        ]
    );
    let found = check_entries([("AWS_SECRET_ACCESS_KEY", secret.as_bytes())]);
    assert_eq!(
        ids(&found),
        [("AWS_SECRET_ACCESS_KEY".to_owned(), "aws-secret-access-key")]
    );
    // Alone, under another name, 40 characters are just 40 characters.
    assert!(check_entries([("SESSION_SALT", secret.as_bytes())]).is_empty());
    // AWS's documented example passes even under its name.
    let example = join(&["wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "EXAMPLEKEY"]);
    assert!(check_entries([("AWS_SECRET_ACCESS_KEY", example.as_bytes())]).is_empty());
}

#[test]
fn the_checksum_is_githubs() {
    // CRC-32 (IEEE) check value, and base62 with digits, upper, lower.
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(&base62_6(0), b"000000");
    assert_eq!(&base62_6(61), b"00000z");
    assert_eq!(&base62_6(62), b"000010");
    assert_eq!(&base62_6(u32::MAX), b"4gfFC3");
}

#[test]
fn findings_serialise_names_and_rule_ids_only() {
    let mut g = Gen(3);
    let live = join(&["sk_", "live_", &g.run(24, ALNUM)]);
    let f = check_entries([("STRIPE", live.as_bytes())]);
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(json, r#"[{"name":"STRIPE","rule":"stripe-live-key"}]"#);
}

#[test]
fn the_readme_lists_every_rule() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    for rule in RULES {
        let level = match rule.level {
            Level::Refuse => "refuse",
            Level::Warn => "warn",
        };
        assert!(
            readme.contains(&format!("| `{}` | {level} |", rule.id)),
            "README.md does not list rule {} ({level})",
            rule.id
        );
    }
}
