//! Clients of `sealctl serve` for tests: a JSON client with one token,
//! tokens, test certificates, raw requests, HTTPS through Python's ssl.

use std::process::Command;

use serde_json::Value;

use crate::{Server, StoreDir, stderr, stdout};

/// A client with one token.
#[derive(Debug)]
pub struct Client {
    pub agent: ureq::Agent,
    pub base: String,
    pub token: Option<String>,
}

/// A status and a JSON body (Null if none).
pub type Reply = (u16, Value);

impl Client {
    pub fn new(server: &Server, token: Option<&str>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            base: format!("{}/api/v1", server.base),
            token: token.map(str::to_owned),
        }
    }

    pub fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut r = r.unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::reply(
            self.auth(self.agent.get(format!("{}{path}", self.base)))
                .call(),
        )
    }

    pub fn delete(&self, path: &str) -> Reply {
        Self::reply(
            self.auth(self.agent.delete(format!("{}{path}", self.base)))
                .call(),
        )
    }

    pub fn put(&self, path: &str, body: Value) -> Reply {
        Self::reply(
            self.auth(self.agent.put(format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    pub fn put_if(&self, path: &str, version: &str, body: Value) -> Reply {
        Self::reply(
            self.auth(self.agent.put(format!("{}{path}", self.base)))
                .header("If-Match", version)
                .send_json(body),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        Self::reply(
            self.auth(self.agent.post(format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    /// A PUT with any content type and bytes.
    pub fn put_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        Self::reply(
            self.auth(self.agent.put(format!("{}{path}", self.base)))
                .content_type(content_type)
                .send(body),
        )
    }
}

pub fn token(env: &StoreDir, scopes: &[&str]) -> String {
    let mut args = vec!["tokens", "create", "--name", "test"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let o = env.run(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o).trim().to_owned();
    assert!(
        t.starts_with("sit_") && t.len() == 40,
        "one token alone on stdout"
    );
    t
}

pub fn code(r: &Reply) -> &str {
    r.1["error"]["code"].as_str().unwrap_or("")
}

pub fn message(r: &Reply) -> String {
    r.1["error"]["message"].as_str().unwrap_or("").to_owned()
}

/// Makes a CA and a certificate for localhost signed by it, named
/// `NAME.pem` / `NAME.key` (and `ca-NAME.pem`), in the store directory.
pub fn certificate(env: &StoreDir, name: &str) {
    let script = format!(
        "set -e
         openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-{name}.key -out ca-{name}.pem -days 2 -subj /CN=ca-{name} 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN=localhost 2>/dev/null
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > {name}.ext
         openssl x509 -req -in {name}.csr -CA ca-{name}.pem -CAkey ca-{name}.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext 2>/dev/null"
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl: {}", stderr(&o));
}

/// GET `url` over HTTPS, trusting only `ca` (Python's ssl module: an
/// independent TLS client); the status and body, or the error.
pub fn https_get(url: &str, ca: &std::path::Path) -> String {
    let o = Command::new("python3")
        .args([
            "-c",
            "import ssl,sys,urllib.request\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             try:\n  r = urllib.request.urlopen(sys.argv[1], context=ctx)\n  print(r.status, r.read().decode())\n\
             except Exception as e:\n  print('error', type(e).__name__)",
            url,
            ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    stdout(&o).trim().to_owned()
}

/// The status and headers (lowercase names) of GET `url` over HTTPS,
/// trusting only `ca`.
pub fn https_headers(url: &str, ca: &std::path::Path) -> String {
    let o = Command::new("python3")
        .args([
            "-c",
            "import ssl,sys,urllib.request\n\
             ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
             r = urllib.request.urlopen(sys.argv[1], context=ctx)\n\
             print(r.status)\n\
             for k, v in r.getheaders(): print(k.lower() + ': ' + v)",
            url,
            ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// Sends `request` as is on a new connection; the reply's head and the
/// first body bytes.
pub fn raw_request(server: &Server, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = server.base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    // Until the JSON body has arrived (or the server closes).
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if String::from_utf8_lossy(&buf[..got]).contains("}}") {
            break;
        }
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

/// The page's sign-in, as a browser does it: GET / for the CSRF cookie,
/// then POST /signin. Returns the status and the Set-Cookie headers.
pub fn signin(server: &Server, token: &str, extra: &[(&str, &str)]) -> (u16, Vec<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut req = agent.get(format!("{}/", server.base));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.call().unwrap();
    // The browser's Origin (unless given): https when a TLS proxy stands
    // in front.
    let origin = match extra.contains(&("X-Forwarded-Proto", "https")) {
        true => server.base.replacen("http://", "https://", 1),
        false => server.base.clone(),
    };
    let given = extra.iter().any(|(k, _)| *k == "Origin");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.contains("sealinit-signin="))
        .unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let csrf = pair.split_once('=').unwrap().1.to_owned();
    let mut req = agent
        .post(format!("{}/signin", server.base))
        .header("Cookie", &pair);
    if !given {
        req = req.header("Origin", &origin);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req
        .send_form([("csrf", csrf.as_str()), ("token", token)])
        .unwrap();
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (r.status().as_u16(), cookies)
}

/// The session cookie's `name=value` from Set-Cookie headers.
pub fn session_of(cookies: &[String]) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with("sealinit="))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"))
}

pub fn signed_in(server: &Server, cookie: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut r = agent
        .get(format!("{}/", server.base))
        .header("Cookie", cookie)
        .call()
        .unwrap();
    r.body_mut()
        .read_to_string()
        .unwrap()
        .contains("Signed in as")
}
