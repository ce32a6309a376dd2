//! The store under load, both backends in one run (issue #14): sealing a
//! 20-secret repository (latency, and throughput from 4 processes), setting
//! secrets (1 and 4 writers), master-key rotation of 1,000 repositories × 10
//! secrets. Through the real `sealctl` binary, as an orchestrator calls it.
//! Writes the store section of BENCHMARKS.md (between its markers).
//!
//!     cargo bench -p sealctl --bench store     (as root; about 2 minutes)

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealinit_testkit::{BACKENDS, Backend, StoreDir, set_bench_r20, stderr, workspace_root};

const SEALS: usize = 200;
const PER_PROCESS: usize = 100;
const SETS: usize = 200;
const REPOS: usize = 1000;

fn main() {
    let mut md = String::new();
    let _ = writeln!(md, "<!-- store -->\n## 9. The store (sealctl)\n");
    let _ = writeln!(
        md,
        "Measured by `cargo bench -p sealctl --bench store`, both backends in the same run, through the \
         `sealctl` binary (one process per command, as an orchestrator calls it). SQLite: a file on the \
         local disk, `synchronous=FULL`. PostgreSQL 15: a throwaway server on a Unix socket with \
         `fsync=off` (the figures show the client and the server's work, not a disk's).\n"
    );
    let _ = writeln!(
        md,
        "| backend | seal median ms | seal p99 ms | seals/s, 4 processes (median of 3 runs) | sets/s, 1 writer | sets/s, 4 writers | rotation, {REPOS} repos × 10 secrets |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    let mut sqlite = None;
    for backend in BACKENDS {
        eprintln!("{backend:?}...");
        let m = measure(backend);
        let _ = writeln!(
            md,
            "| {backend:?} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} s |",
            m.seal_median_ms, m.seal_p99_ms, m.seals_per_s, m.sets_1, m.sets_4, m.rotation_s
        );
        if backend == Backend::Sqlite {
            sqlite = Some(m);
        }
    }
    let m = sqlite.expect("SQLite measured");
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(
        md,
        "\n| target (SQLite, 2 cores) | measured | verdict |\n|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| at least 500 seals/s from 4 processes | {:.0}/s | {} |",
        m.seals_per_s,
        verdict(m.seals_per_s >= 500.0)
    );
    let _ = writeln!(
        md,
        "| rotation of {REPOS} repositories × 10 secrets in at most 1 s | {:.2} s | {} |",
        m.rotation_s,
        verdict(m.rotation_s <= 1.0)
    );
    let _ = writeln!(
        md,
        "\nWhere the seal time goes: each `seal --repo` is a process (about 0.6 ms of start-up over \
         a bare exec on this machine) that opens the store, reads and decrypts 20 values, seals them, \
         and commits a durable audit record of the seal (a seal is a read of the values) before it \
         writes the bundle. One WAL commit (4 pages, one fsync) per seal; the bundle and its key are \
         one-use launch artifacts, renamed into place but not fsynced (two fsyncs fewer). Two SQLite \
         effects cost more than the work itself and are handled: the first process to open the file \
         after the last one closed rebuilds the WAL index by reading the whole WAL, and that index \
         forgets checkpoints, so the WAL never restarted and grew to 4 MiB read by every command \
         (a closing connection now truncates it above 256 KiB); and the audit table's AUTOINCREMENT \
         rewrote one more page per record (schema 4 drops it). Rotation re-wraps one data key per \
         repository and touches no value. The 4-process loop pipes the key to stdout, as an \
         orchestrator hands it on. PostgreSQL pays a connection (a server process) per command.\n\
         <!-- /store -->"
    );
    println!("{md}");
    let path = workspace_root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let text = match (text.find("<!-- store -->"), text.find("<!-- /store -->")) {
        (Some(a), Some(b)) => format!("{}{md}{}", &text[..a], &text[b + "<!-- /store -->".len()..]),
        _ => format!("{}\n{md}\n", text.trim_end()),
    };
    fs::write(&path, text).unwrap();
    eprintln!("wrote the store section of BENCHMARKS.md");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Measured {
    seal_median_ms: f64,
    seal_p99_ms: f64,
    seals_per_s: f64,
    sets_1: f64,
    sets_4: f64,
    rotation_s: f64,
}

fn measure(backend: Backend) -> Measured {
    let env = StoreDir::on(backend);
    set_bench_r20(&env);
    let ok = |args: &[&str]| {
        let o = env.run(args, None);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };

    // Seal latency, one at a time.
    let mut times: Vec<Duration> = (0..SEALS)
        .map(|i| {
            let t = Instant::now();
            ok(&[
                "seal",
                "--repo",
                "bench/r20",
                "--out",
                &format!("b{i}"),
                "--key-out",
                &format!("k{i}"),
            ]);
            t.elapsed()
        })
        .collect();
    times.sort();
    let (median, p99) = (times[SEALS / 2], times[SEALS * 99 / 100]);

    // Throughput: 4 processes, each sealing in a loop.
    let sealctl = sealinit_testkit::workspace_bin("sealctl");
    let parallel = |script: &str| -> Duration {
        let t = Instant::now();
        let children: Vec<_> = (0..4)
            .map(|p| {
                Command::new("sh")
                    .args([
                        "-c",
                        script,
                        "sh",
                        sealctl,
                        &p.to_string(),
                        &PER_PROCESS.to_string(),
                    ])
                    .current_dir(env.dir.path())
                    .env("SEALCTL_STORE", &env.store)
                    .env("SEALCTL_MASTER_KEY", env.path("master.key"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "{script}");
        }
        t.elapsed()
    };
    // The key goes down a pipe, as an orchestrator hands it to a sandbox
    // (no file to remove between seals: the loop runs nothing but sealctl).
    let seal_loop = r#"i=0; while [ $i -lt $3 ]; do "$1" seal --repo bench/r20 --out b$2 --key-out - >/dev/null || exit 1; i=$((i+1)); done"#;
    // The median of three runs: one run varies by ±10% on this machine.
    let mut runs: Vec<f64> = (0..3)
        .map(|_| (4 * PER_PROCESS) as f64 / parallel(seal_loop).as_secs_f64())
        .collect();
    runs.sort_by(f64::total_cmp);
    let seals_per_s = runs[1];

    // Sets: one writer, then four.
    env.create(&[
        "bench/sets",
        "bench/sets0",
        "bench/sets1",
        "bench/sets2",
        "bench/sets3",
    ]);
    let t = Instant::now();
    for i in 0..SETS {
        let o = env.run(
            &[
                "secrets",
                "set",
                "--repo",
                "bench/sets",
                &format!("S{}", i % 50),
            ],
            Some(b"v"),
        );
        assert!(o.status.success());
    }
    let sets_1 = SETS as f64 / t.elapsed().as_secs_f64();
    let set_loop = r#"i=0; while [ $i -lt $3 ]; do printf v | "$1" secrets set --repo bench/sets$2 S$((i % 50)) || exit 1; i=$((i+1)); done"#;
    let sets_4 = (4 * PER_PROCESS) as f64 / parallel(set_loop).as_secs_f64();

    // Rotation with 1,000 repositories × 10 secrets.
    let ten: String = (0..10)
        .map(|i| format!("K{i}=value-{i}-0123456789abcdef\n"))
        .collect();
    fs::write(env.path("ten.env"), ten).unwrap();
    let fill = r#"i=$2; while [ $i -lt 1000 ]; do "$1" repos create rot/r$i && "$1" secrets set --repo rot/r$i --from-env-file ten.env || exit 1; i=$((i+4)); done"#;
    parallel(fill);
    let _ = fs::remove_file(env.path("new.key"));
    let t = Instant::now();
    ok(&["store", "rotate-master-key", "--new", "new.key"]);
    let rotation = t.elapsed();
    assert!(Path::new(&env.path("new.key")).exists());

    Measured {
        seal_median_ms: ms(median),
        seal_p99_ms: ms(p99),
        seals_per_s,
        sets_1,
        sets_4,
        rotation_s: rotation.as_secs_f64(),
    }
}
