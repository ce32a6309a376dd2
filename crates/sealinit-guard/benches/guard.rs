//! How fast the guard reads values (issue #15: well under 1 ms for 1 MiB).
//! Writes the guard section of BENCHMARKS.md (between its markers).
//!
//!     cargo bench -p sealinit-guard --bench guard

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const MIB: usize = 1 << 20;
const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Near misses of every rule: each rule's prefix starting a value that
/// must not hit (so candidates are checked, not only found).
const NEAR: &[&str] = &[
    "sk_test_",
    "AKIA",
    "ghp_",
    "github_pat_x",
    "glpat-x",
    "xoxb-x",
    "sk-",
    "AIza",
    "npm_",
    "pypi-",
    "SG.",
    "-----BEGIN PUBLIC KEY-----\n",
    "postgres://app@localhost:5432/app_test?sslmode=disable#",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn alnum(&mut self, n: usize, out: &mut Vec<u8>) {
        for _ in 0..n {
            out.push(ALNUM[(self.next() % 62) as usize]);
        }
    }
}

/// 1 MiB of what a repository's values look like: tokens, URLs, text,
/// and one value in four a near miss of a rule. No hit.
fn values() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x2026_1201);
    let mut out = Vec::new();
    let mut total = 0;
    while total < MIB {
        let mut v = Vec::with_capacity(256);
        match rng.next() % 4 {
            0 => {
                v.extend_from_slice(NEAR[(rng.next() % NEAR.len() as u64) as usize].as_bytes());
                // Shorter than every rule asks: near misses, not hits.
                let n = 4 + (rng.next() % 12) as usize;
                rng.alnum(n, &mut v);
            }
            1 => {
                v.extend_from_slice(b"https://staging.example.com/api/v2?token=");
                rng.alnum(32, &mut v);
            }
            _ => {
                let n = 16 + (rng.next() % 240) as usize;
                for i in 0..n {
                    if i % 9 == 8 {
                        v.push(b' ');
                    } else {
                        rng.alnum(1, &mut v);
                    }
                }
            }
        }
        total += v.len();
        out.push(v);
    }
    out
}

/// The adversarial case: one value of 1 MiB with a near miss every 64
/// bytes on average, glued to random letters.
fn dense() -> Vec<u8> {
    let mut rng = Rng(42);
    let mut v = Vec::with_capacity(MIB + 64);
    while v.len() < MIB {
        rng.alnum(1, &mut v);
        if rng.next() % 64 == 0 {
            v.extend_from_slice(NEAR[(rng.next() % NEAR.len() as u64) as usize].as_bytes());
        }
    }
    v
}

/// The median of 51 runs of `f`, in ms per MiB of `bytes`.
fn median_per_mib(bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..51)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[25] * MIB as f64 / bytes as f64
}

fn main() {
    let values = values();
    let bytes: usize = values.iter().map(Vec::len).sum();
    let names: Vec<String> = (0..values.len()).map(|i| format!("S{i}")).collect();
    let entries = || {
        names
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(Vec::as_slice))
    };
    assert!(
        sealinit_guard::check_entries(entries()).is_empty(),
        "the corpus must hold no hit"
    );
    let one = values.join(&b'\n');
    let dense = dense();
    assert!(sealinit_guard::check(&dense).is_empty());
    let rows = [
        (
            format!("{} values, as `secrets set` checks an import", values.len()),
            median_per_mib(bytes, || {
                std::hint::black_box(sealinit_guard::check_entries(entries()));
            }),
            true,
        ),
        (
            "the same, as one 1 MiB value".to_owned(),
            median_per_mib(one.len(), || {
                std::hint::black_box(sealinit_guard::check(&one));
            }),
            true,
        ),
        (
            "adversarial: a near miss every 64 bytes".to_owned(),
            median_per_mib(dense.len(), || {
                std::hint::black_box(sealinit_guard::check(&dense));
            }),
            false,
        ),
    ];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "<!-- guard -->\n## 10. The production-credential guard\n"
    );
    let _ = writeln!(
        md,
        "Measured by `cargo bench -p sealinit-guard --bench guard`: the median of 51 runs over \
         1 MiB of values (tokens, URLs, text; one value in four starts like a credential of some \
         rule and is not one, so its shape is checked), with no hit.\n"
    );
    let _ = writeln!(
        md,
        "| input | ms per MiB | target | verdict |\n|---|---:|---|---|"
    );
    for (what, ms, judged) in &rows {
        let verdict = match (judged, *ms < 1.0) {
            (false, _) => "(reported)",
            (true, true) => "met",
            (true, false) => "**missed**",
        };
        let target = if *judged { "under 1 ms" } else { "" };
        let _ = writeln!(md, "| {what} | {ms:.3} | {target} | {verdict} |");
    }
    let _ = writeln!(
        md,
        "\nOne pass per value: an Aho-Corasick automaton (its SIMD prefilter) over every rule's \
         prefixes; only candidates are checked against the full shape. The adversarial row is \
         bounded by candidates, each checked once and at most 512 bytes long.\n<!-- /guard -->"
    );
    println!("{md}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let text = match (text.find("<!-- guard -->"), text.find("<!-- /guard -->")) {
        (Some(a), Some(b)) => format!("{}{md}{}", &text[..a], &text[b + "<!-- /guard -->".len()..]),
        _ => format!("{}\n\n{md}", text.trim_end()),
    };
    std::fs::write(&path, text).unwrap();
    eprintln!("wrote the guard section of BENCHMARKS.md");
}
