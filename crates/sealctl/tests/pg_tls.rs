//! TLS to PostgreSQL with rustls (issue #14), against a server of its own
//! that accepts TLS connections only (`hostssl` in pg_hba.conf), with a
//! certificate for `localhost` signed by a throwaway CA.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sealinit_testkit::*;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

struct TlsServer {
    dir: PathBuf,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .args([
                "-D",
                &format!("{}/data", self.dir.display()),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sh(script: &str, dir: &Path) {
    let o = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {}", stderr(&o));
}

fn start() -> TlsServer {
    let dir = tempfile::Builder::new()
        .prefix("sealinit-pgtls-")
        .tempdir()
        .unwrap()
        .keep();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A CA, a server certificate for localhost signed by it, and a second,
    // unrelated CA.
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null \
         && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null \
         && printf 'subjectAltName=DNS:localhost\\n' > san.ext \
         && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null \
         && openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 2 -subj /CN=other-ca 2>/dev/null \
         && chown postgres server.key server.pem . && chmod 600 server.key",
        &dir,
    );
    let pg = |args: &str| sh(&format!("runuser -u postgres -- {PG_BIN}/{args}",), &dir);
    pg(&format!(
        "initdb -D {}/data -A trust -U postgres --no-sync -E UTF8 >/dev/null",
        dir.display()
    ));
    fs::write(
        dir.join("data/pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    pg(&format!(
        "pg_ctl -D {d}/data -w -l {d}/log -o \"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={d} -c fsync=off -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key\" start >/dev/null",
        d = dir.display()
    ));
    TlsServer { dir, port }
}

fn sealctl(env: &StoreDir, store: &str, args: &[&str]) -> std::process::Output {
    env.cmd(args).env("SEALCTL_STORE", store).output().unwrap()
}

#[test]
fn tls_as_sslmode_asks() {
    let server = start();
    let (p, ca, other) = (
        server.port,
        server.dir.join("ca.pem"),
        server.dir.join("other-ca.pem"),
    );
    let env = StoreDir::empty();
    // require: encrypted (the server takes nothing else), not verified.
    let require = format!(
        "host=127.0.0.1 port={p} user=postgres dbname=postgres sslmode=require password=hunter2"
    );
    let o = sealctl(&env, &require, &["store", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sealctl(&env, &require, &["repos", "create", "acme/api"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env
        .cmd(&["secrets", "set", "--repo", "acme/api", "T"])
        .env("SEALCTL_STORE", &require)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"v")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // disable: refused by the server, a clear 74, no password shown.
    let disable = format!(
        "host=127.0.0.1 port={p} user=postgres dbname=postgres sslmode=disable password=hunter2"
    );
    let o = sealctl(&env, &disable, &["repos"]);
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    // verify-full against the right CA, by name: works; by IP (the
    // certificate names localhost only): refused; verify-ca by IP: works.
    let url = |host: &str, mode: &str, root: &Path| {
        format!(
            "postgres://postgres:hunter2@{host}:{p}/postgres?sslmode={mode}&sslrootcert={}",
            root.display()
        )
    };
    let o = sealctl(
        &env,
        &url("localhost", "verify-full", &ca),
        &["repos", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("acme/api"));
    let o = sealctl(&env, &url("127.0.0.1", "verify-full", &ca), &["repos"]);
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    eprintln!("verify-full by IP: {}", stderr(&o));
    let o = sealctl(&env, &url("127.0.0.1", "verify-ca", &ca), &["repos"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Another CA: refused, and the message keeps the password out.
    let o = sealctl(&env, &url("localhost", "verify-full", &other), &["repos"]);
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("postgres:***@localhost") && !stderr(&o).contains("hunter2"),
        "{}",
        stderr(&o)
    );
}
