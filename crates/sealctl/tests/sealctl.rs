//! sealctl end to end: keygen, seal (dotenv and JSON), inspect, and every
//! bad input with its exit code; no value is ever printed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sealinit_testkit::*;

const SEALCTL: &str = env!("CARGO_BIN_EXE_sealctl");

const SECRET: &str = "pa55-WORD-never-shown";

fn sealctl(dir: &Path, args: &[&str]) -> Output {
    let o = Command::new(SEALCTL)
        .args(args)
        .current_dir(dir)
        .env("SEALCTL_LOG", "trace")
        .output()
        .unwrap();
    for text in [stdout(&o), stderr(&o)] {
        assert!(
            !text.contains(SECRET),
            "sealctl {args:?} printed a secret: {text}"
        );
    }
    o
}

fn assert_fails(o: &Output, code: i32, message: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert!(
        stderr(o).contains(message),
        "want {message:?} in {}",
        stderr(o)
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn keygen_writes_a_new_0600_key_and_never_overwrites() {
    let t = tempfile::tempdir().unwrap();
    let o = sealctl(t.path(), &["keygen", "--out", "k"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = fs::metadata(t.path().join("k")).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let first = fs::read(t.path().join("k")).unwrap();

    assert_fails(
        &sealctl(t.path(), &["keygen", "--out", "k"]),
        73,
        "k already exists; refusing to overwrite",
    );
    assert_eq!(fs::read(t.path().join("k")).unwrap(), first, "untouched");
    assert_fails(
        &sealctl(t.path(), &["keygen", "--out", "no/such/dir/k"]),
        73,
        "cannot write no/such/dir/k",
    );

    sealctl(t.path(), &["keygen", "--out", "k2"]);
    assert_ne!(
        fs::read(t.path().join("k2")).unwrap(),
        first,
        "keys are random"
    );
}

#[test]
fn seal_env_file_then_inspect_then_run() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(
        d.join("app.env"),
        format!(
            "# comment\nexport DB_PASSWORD={SECRET}\nMULTI=\"a\nb\"\nQUOTED='x=y \"z\"'\nEMPTY=\n"
        ),
    )
    .unwrap();
    sealctl(d, &["keygen", "--out", "k"]);
    let o = sealctl(
        d,
        &[
            "seal",
            "--key",
            "k",
            "--out",
            "b",
            "--from-env-file",
            "app.env",
            "--label",
            "acme/api",
            "--ttl",
            "2h",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sealed 4 secrets into b, expires "),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::metadata(d.join("b")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(files_in(d), ["app.env", "b", "k"], "no temporary file left");

    let o = sealctl(d, &["inspect", "b"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("format:   sealinit bundle v1"), "{text}");
    assert!(text.contains("label:    \"acme/api\""), "{text}");
    assert!(text.contains("verified: no"), "{text}");
    assert!(!text.contains("DB_PASSWORD"), "names need the key: {text}");

    let o = sealctl(d, &["inspect", "b", "--key", "k"]);
    let text = stdout(&o);
    assert!(text.contains("verified: yes, 4 entries"), "{text}");
    assert!(
        text.contains(&format!(
            "DB_PASSWORD{}{} bytes",
            " ".repeat(22),
            SECRET.len()
        )),
        "{text}"
    );

    let o = sealctl(d, &["inspect", "--json", "b", "--key", "k"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["label"], "acme/api");
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["entries"][0]["name"], "DB_PASSWORD");
    assert_eq!(doc["entries"][0]["size"], SECRET.len());
    assert_eq!(
        doc["expires"].as_u64().unwrap() - doc["created"].as_u64().unwrap(),
        7200
    );

    let o = run(sealinit(
        Mode::Pid1,
        Some(&d.join("k")),
        &[
            "--bundle",
            d.join("b").to_str().unwrap(),
            "sh",
            "-c",
            r#"[ "$DB_PASSWORD" = "pa55-WORD-never-shown" ] && printf '%s|%s|%s' "$MULTI" "$QUOTED" "${EMPTY-unset}""#,
        ],
    ));
    assert_eq!(stdout(&o), "a\nb|x=y \"z\"|", "{}", stderr(&o));

    let other = tempfile::tempdir().unwrap();
    sealctl(other.path(), &["keygen", "--out", "k"]);
    let o = sealctl(
        d,
        &[
            "inspect",
            "b",
            "--key",
            other.path().join("k").to_str().unwrap(),
        ],
    );
    assert_fails(&o, 65, "authentication failed");
}

#[test]
fn seal_json_object_of_strings() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    sealctl(d, &["keygen", "--out", "k"]);
    fs::write(
        d.join("s.json"),
        format!(r#"{{"API_KEY": "{SECRET}", "UNI": "\u00e9\n"}}"#),
    )
    .unwrap();
    let o = sealctl(
        d,
        &["seal", "--key", "k", "--out", "b", "--from-json", "s.json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(sealinit(
        Mode::Plain,
        Some(&d.join("k")),
        &["--bundle", d.join("b").to_str().unwrap(), "printenv", "UNI"],
    ));
    assert_eq!(stdout(&o), "é\n\n");
}

#[test]
fn bad_inputs_are_refused_with_their_codes_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    sealctl(d, &["keygen", "--out", "k"]);
    let seal =
        |file: &str, flag: &str| sealctl(d, &["seal", "--key", "k", "--out", "out", flag, file]);
    let cases: [(&str, &str, &str, i32, &str); 12] = [
        (
            "syntax.env",
            "--from-env-file",
            &format!("A=1\nB=\"{SECRET}\nC=3\n"),
            65,
            "syntax error on line 2, after A (the line is not shown",
        ),
        (
            "badname.env",
            "--from-env-file",
            &format!("A.B={SECRET}\n"),
            65,
            // An invalid name may be a piece of a value: not shown.
            "line 1 (the line is not shown, it may hold a secret): the text before = is not a valid name",
        ),
        (
            "reserved.env",
            "--from-env-file",
            "SEALINIT_BUNDLE=x\n",
            65,
            "name \"SEALINIT_BUNDLE\" is reserved",
        ),
        (
            "dup.env",
            "--from-env-file",
            &format!("A=1\nA={SECRET}\n"),
            65,
            "duplicate name \"A\"",
        ),
        (
            "number.json",
            "--from-json",
            r#"{"PIN": 9876543210}"#,
            65,
            "the value of \"PIN\" is not a string",
        ),
        (
            "nested.json",
            "--from-json",
            &format!(r#"{{"A": ["{SECRET}"]}}"#),
            65,
            "the value of \"A\" is not a string",
        ),
        (
            "nul.json",
            "--from-json",
            r#"{"A": "x\u0000y"}"#,
            65,
            "the value of \"A\" contains a NUL byte",
        ),
        (
            "dup.json",
            "--from-json",
            &format!(r#"{{"A": "{SECRET}", "A": "2"}}"#),
            65,
            "duplicate name \"A\"",
        ),
        (
            "broken.json",
            "--from-json",
            &format!(r#"{{"A": "{SECRET}" "#),
            65,
            "unexpected end of file",
        ),
        (
            "syntax.json",
            "--from-json",
            &format!(r#"{{"A": "{SECRET}",, }}"#),
            65,
            "not valid JSON (line 1",
        ),
        (
            "array.json",
            "--from-json",
            &format!(r#"["{SECRET}"]"#),
            65,
            "expected one JSON object whose values are strings",
        ),
        (
            "string.json",
            "--from-json",
            &format!(r#""{SECRET}""#),
            65,
            "expected one JSON object whose values are strings",
        ),
    ];
    for (file, flag, content, code, message) in cases {
        fs::write(d.join(file), content).unwrap();
        assert_fails(&seal(file, flag), code, message);
        assert!(!d.join("out").exists(), "{file}: output written");
    }
    assert_fails(
        &seal("missing.env", "--from-env-file"),
        66,
        "env file missing.env: no such file or directory",
    );
    assert_fails(
        &seal("missing.json", "--from-json"),
        66,
        "JSON file missing.json: no such file or directory",
    );
    fs::write(d.join("ok.env"), "A=1\n").unwrap();
    let seal_ok = |key: &str, extra: &[&str]| {
        let mut args = vec![
            "seal",
            "--key",
            key,
            "--out",
            "out",
            "--from-env-file",
            "ok.env",
        ];
        args.extend_from_slice(extra);
        sealctl(d, &args)
    };
    assert_fails(
        &seal_ok("nokey", &[]),
        66,
        "key file nokey: no such file or directory",
    );
    fs::write(d.join("shortkey"), [0u8; 31]).unwrap();
    assert_fails(
        &seal_ok("shortkey", &[]),
        66,
        "key file shortkey: holds 31 bytes",
    );
    let o = sealctl(d, &["seal", "--key", "k", "--out", "out"]);
    assert_fails(&o, 64, "--from-env-file");
    assert_fails(
        &seal_ok("k", &["--from-json", "x"]),
        64,
        "cannot be used with",
    );
    let o = seal_ok("k", &["--ttl", "5 min"]);
    assert_fails(&o, 64, "invalid duration");
    assert!(!d.join("out").exists());
    assert_fails(
        &sealctl(d, &["inspect", "ok.env"]),
        65,
        "not a sealinit bundle",
    );
    assert_fails(
        &sealctl(d, &["inspect", "nothing"]),
        66,
        "bundle nothing: no such file or directory",
    );
    assert_fails(&sealctl(d, &["frobnicate"]), 64, "unrecognized subcommand");
}

#[test]
fn limits_are_checked_at_seal_time() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    sealctl(d, &["keygen", "--out", "k"]);
    let big = format!("BIG={}\n", "v".repeat(131_072));
    let many: String = (0..10_001).map(|i| format!("N{i}=\n")).collect();
    let heavy: String = (0..9)
        .map(|i| format!("N{i}={}\n", "v".repeat(130_000)))
        .collect();
    for (content, message) in [
        (
            big,
            "\"BIG\"=value is 131076 bytes, over the 131071-byte limit",
        ),
        (many, "10001 entries is more than the 10000 allowed"),
        (heavy, "over the 1048576-byte limit"),
    ] {
        fs::write(d.join("in.env"), content).unwrap();
        let o = sealctl(
            d,
            &[
                "seal",
                "--key",
                "k",
                "--out",
                "b",
                "--from-env-file",
                "in.env",
            ],
        );
        assert_fails(&o, 65, message);
        assert!(!d.join("b").exists());
    }
}
