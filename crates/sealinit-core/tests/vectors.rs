//! Fixed test vectors (`tests/vectors/`, described in docs/FORMAT.md §6).
//! A change that breaks format compatibility fails `vectors_open_as_expected`.
//! `cargo test --test vectors -- --ignored regenerate` rewrites them; only
//! do that for a new format version.

use std::fs;
use std::path::{Path, PathBuf};

use sealinit_core::bundle::{self, Binding, BundleError, Delivery, Entry, Header, OpenedBundle};
use sealinit_core::secret::{SecretBuf, SecretKey, SecretValue};

const NOW: u64 = 1_800_000_000; // 2027-01-15: every "ok" vector is valid then

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn kind(e: &BundleError) -> &'static str {
    match e {
        BundleError::DecryptionFailed => "authentication",
        BundleError::Expired { .. } => "expired",
        BundleError::NewerVersion(_) => "newer-version",
        BundleError::NotABundle => "not-a-bundle",
        BundleError::Truncated(_) => "truncated",
        BundleError::Payload(_) => "payload",
        _ => "other",
    }
}

fn key_from(bytes: &[u8]) -> SecretKey {
    SecretKey::from_bytes_for_tests(bytes.try_into().expect("32-byte key")).unwrap()
}

fn open(key: &SecretKey, bundle: &[u8]) -> Result<OpenedBundle, BundleError> {
    let mut buf = SecretBuf::zeroed(bundle.len()).unwrap();
    buf.expose_mut().copy_from_slice(bundle);
    OpenedBundle::open(key, buf, Some(NOW))
}

#[test]
fn vectors_open_as_expected() {
    let mut checked = 0;
    for item in fs::read_dir(dir()).unwrap() {
        let path = item.unwrap().path();
        if path.extension().is_none_or(|e| e != "expected") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let expected = fs::read_to_string(&path).unwrap();
        let mut lines = expected.lines();
        let expect = lines.next().unwrap().strip_prefix("# expect: ").unwrap();
        let key_bytes = fs::read(dir().join(format!("{name}.key"))).unwrap();
        let sealed = fs::read(dir().join(format!("{name}.bundle"))).unwrap();
        let key = key_from(&key_bytes);
        match (expect, open(&key, &sealed)) {
            ("ok", Ok(opened)) => {
                let v2 = opened.header().version >= 2;
                let got: Vec<String> = opened
                    .entries()
                    .map(|e| match v2 {
                        false => format!("{} {}", e.name(), hex(e.value())),
                        true => format!("{} {} {}", e.name(), hex(e.value()), e.delivery()),
                    })
                    .collect();
                let want: Vec<&str> = lines.collect();
                assert_eq!(got, want, "vector {name}");
                // Writers must agree too: re-sealing with the stored nonce
                // and header reproduces the file byte for byte.
                let layout = bundle::parse(&sealed).unwrap();
                let nonce: [u8; 24] = sealed[layout.aad_end..layout.aad_end + 24]
                    .try_into()
                    .unwrap();
                let entries: Vec<Entry> = want
                    .iter()
                    .map(|l| {
                        let mut parts = l.split(' ');
                        let (n, v) = (parts.next().unwrap(), parts.next().unwrap());
                        Entry {
                            name: n.into(),
                            value: SecretValue::from(unhex(v)),
                            delivery: parts
                                .next()
                                .map_or(Delivery::Env, |d| Delivery::parse(d).unwrap()),
                        }
                    })
                    .collect();
                let resealed = bundle::seal(&key, &layout.header, &entries, &nonce).unwrap();
                assert_eq!(hex(&resealed), hex(&sealed), "vector {name} re-sealed");
            }
            (want, Err(e)) => assert_eq!(format!("error {}", kind(&e)), want, "vector {name}: {e}"),
            (want, Ok(_)) => panic!("vector {name} opened, expected {want}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 9, "all vectors present");
}

/// A reader written from docs/FORMAT.md alone (Python and libsodium, no
/// code shared with sealinit) opens every vector as `.expected` says.
#[test]
fn an_independent_reader_opens_every_vector() {
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader/read_bundle.py");
    let mut checked = 0;
    for item in fs::read_dir(dir()).unwrap() {
        let path = item.unwrap().path();
        if path.extension().is_none_or(|e| e != "expected") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        // Debian's Python, with its libsodium binding (python3-nacl).
        let o = std::process::Command::new("/usr/bin/python3")
            .arg(&reader)
            .arg(dir().join(format!("{name}.key")))
            .arg(dir().join(format!("{name}.bundle")))
            .arg(NOW.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = String::from_utf8(o.stdout).unwrap();
        let expected = fs::read_to_string(&path).unwrap();
        let expected = expected.strip_prefix("# expect: ").unwrap();
        assert_eq!(got, expected, "vector {name}");
        checked += 1;
    }
    assert_eq!(checked, 9, "all vectors present");
}

struct Spec {
    name: &'static str,
    key: [u8; 32],
    nonce: [u8; 24],
    header: Header,
    entries: Vec<(&'static str, Vec<u8>, Delivery)>,
}

const PLACEHOLDER: &[u8] = b"sk_test_sealinit0123456789abcdefABCD";

fn specs() -> Vec<Spec> {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let nonce: [u8; 24] = std::array::from_fn(|i| 0x40 + i as u8);
    let basic = Spec {
        name: "basic",
        key,
        nonce,
        header: Header::new(1_795_900_000, None, Some("acme/api".into())),
        entries: vec![
            ("API_TOKEN", b"tok-123".to_vec(), Delivery::Env),
            ("EMPTY", vec![], Delivery::Env),
        ],
    };
    let rich = Spec {
        name: "rich",
        key: [0xa5; 32],
        nonce: [0x11; 24],
        header: Header::new(1_795_900_000, Some(4_102_444_800), None),
        entries: vec![
            ("MULTI", b"line1\nline2\n".to_vec(), Delivery::Env),
            ("EQUALS", b"a=b==c".to_vec(), Delivery::Env),
            ("QUOTES", b"\"'`$HOME\\".to_vec(), Delivery::Env),
            ("UNICODE", "héllo ✓ 日本".as_bytes().to_vec(), Delivery::Env),
            ("BINARY", (1..=255).collect(), Delivery::Env),
            ("_under_9", b"x".to_vec(), Delivery::Env),
        ],
    };
    let empty = Spec {
        name: "empty",
        key: [0xff; 32],
        nonce: [0; 24],
        header: Header::new(0, None, None),
        entries: vec![],
    };
    let expired = Spec {
        name: "expired",
        key,
        nonce,
        header: Header::new(1_795_900_000, Some(1_795_903_600), Some("acme/api".into())),
        entries: vec![("API_TOKEN", b"tok-123".to_vec(), Delivery::Env)],
    };
    // Format version 2: the header names the repository it was minted
    // from, and each entry has its delivery; the sandbox's part holds a
    // proxy secret's placeholder.
    let repo = Spec {
        name: "repo",
        key: [0x5c; 32],
        nonce: [0x22; 24],
        header: Header::new(1_795_900_000, None, Some("launch-42".into())).with_repo("acme/api"),
        entries: vec![
            ("API_TOKEN", b"tok-123".to_vec(), Delivery::Env),
            ("NPM_TOKEN", b"npm-456".to_vec(), Delivery::Setup),
            ("STRIPE_KEY", PLACEHOLDER.to_vec(), Delivery::Proxy),
        ],
    };
    // The proxy's part of the same launch: the proxy secret's value and
    // binding, and the others' values (for the leak check).
    let mut bindings = std::collections::BTreeMap::new();
    bindings.insert(
        "STRIPE_KEY".to_owned(),
        Binding {
            hosts: vec!["api.stripe.com".into()],
            placeholder: String::from_utf8(PLACEHOLDER.to_vec()).unwrap(),
            in_body: false,
        },
    );
    let proxy = Spec {
        name: "proxy-part",
        key: [0x6d; 32],
        nonce: [0x33; 24],
        header: Header::new(1_795_900_000, None, Some("launch-42".into()))
            .with_repo("acme/api")
            .proxy_part(bindings),
        entries: vec![
            ("API_TOKEN", b"tok-123".to_vec(), Delivery::Env),
            ("NPM_TOKEN", b"npm-456".to_vec(), Delivery::Setup),
            ("STRIPE_KEY", b"sk_test_51abc".to_vec(), Delivery::Proxy),
        ],
    };
    vec![basic, rich, empty, expired, repo, proxy]
}

fn write_vector(name: &str, key: &[u8], sealed: &[u8], expected: &str) {
    fs::write(dir().join(format!("{name}.key")), key).unwrap();
    fs::write(dir().join(format!("{name}.bundle")), sealed).unwrap();
    fs::write(dir().join(format!("{name}.expected")), expected).unwrap();
}

#[test]
#[ignore = "rewrites tests/vectors; run only for a new format version"]
fn regenerate() {
    fs::create_dir_all(dir()).unwrap();
    let mut basic = None;
    for s in specs() {
        let key = key_from(&s.key);
        let entries: Vec<Entry> = s
            .entries
            .iter()
            .map(|(n, v, d)| Entry {
                name: (*n).into(),
                value: SecretValue::from(v.clone()),
                delivery: *d,
            })
            .collect();
        let sealed = bundle::seal(&key, &s.header, &entries, &s.nonce).unwrap();
        let mut expected = String::new();
        if s.name == "expired" {
            expected.push_str("# expect: error expired\n");
        } else {
            expected.push_str("# expect: ok\n");
            for (n, v, d) in &s.entries {
                match s.header.version {
                    1 => expected.push_str(&format!("{n} {}\n", hex(v))),
                    _ => expected.push_str(&format!("{n} {} {d}\n", hex(v))),
                }
            }
        }
        write_vector(s.name, &s.key, &sealed, &expected);
        if s.name == "basic" {
            basic = Some((s.key, sealed));
        }
    }
    let (key, sealed) = basic.unwrap();
    let mut wrong = key;
    wrong[31] ^= 1;
    write_vector(
        "wrong-key",
        &wrong,
        &sealed,
        "# expect: error authentication\n",
    );
    let mut tampered = sealed.clone();
    let last = tampered.len() - 20; // inside the ciphertext
    tampered[last] ^= 0x01;
    write_vector(
        "tampered",
        &key,
        &tampered,
        "# expect: error authentication\n",
    );
    let mut newer = sealed;
    newer[8] = bundle::VERSION + 1;
    write_vector(
        "newer-version",
        &key,
        &newer,
        "# expect: error newer-version\n",
    );
}
