//! `sealctl --server URL`: the store's commands against the service
//! instead of a local store. Values leave this process only sealed
//! (`crypto_box_seal`) to the repository's public key; a bundle comes back
//! minted by the service.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use sealinit_core::secret::SecretKey;
pub use sealinit_server::service::Format;

pub struct Remote {
    agent: ureq::Agent,
    /// `URL/api/v1` of each instance, tried in order.
    bases: Vec<String>,
    auth: Zeroizing<String>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("bases", &self.bases)
            .finish_non_exhaustive()
    }
}

/// A fresh `Idempotency-Key`: 128 random bits, hex.
fn idempotency_key() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::os("getrandom", std::io::Error::other(e)))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A minted bundle.
/// How `set_one` sets a value.
#[derive(Debug, Clone, Copy)]
pub struct SetOne<'a> {
    /// Compare-and-set: the version it must be at.
    pub if_version: Option<i64>,
    pub allow_production: bool,
    pub allow_name: bool,
    pub route: &'a sealinit_store::RouteChange,
}

pub struct Minted {
    pub bundle: Zeroizing<Vec<u8>>,
    pub key: SecretKey,
    /// The egress proxy's part and its key, for a repository with proxy
    /// secrets.
    pub proxy: Option<(Zeroizing<Vec<u8>>, SecretKey)>,
    pub label: String,
    pub names: Vec<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("label", &self.label)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

pub fn repo_path(repo: &str) -> Result<String> {
    sealinit_store::validate_repo(repo)?;
    Ok(repo.replace('/', "%2F"))
}

/// The API's path of a holder's secrets (a store key: a repository, an
/// environment of one, an owner), before `/secrets`.
pub fn holder_path(key: &str) -> Result<String> {
    use sealinit_store::holder::Holder;
    sealinit_store::holder::validate_key(key)?;
    Ok(match Holder::of(key) {
        Holder::Repo(r) => format!("/repos/{}", repo_path(&r)?),
        Holder::Env { repo, env } => format!("/repos/{}/environments/{env}", repo_path(&repo)?),
        Holder::Org(o) => format!("/orgs/{o}"),
    })
}

impl Remote {
    /// `server` (`https://host:port` or `http://127.0.0.1:port`; several,
    /// comma-separated, are instances of one service, tried in order), the
    /// token, and a PEM CA to trust instead of the web's roots.
    pub fn new(server: &str, token: Zeroizing<String>, ca: Option<&Path>) -> Result<Self> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::usage(format!(
                    "--server-ca {}: {}",
                    ca.display(),
                    sealinit_core::describe_io(&e)
                ))
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::usage(format!(
                    "--server-ca {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let bases: Vec<String> = server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| format!("{}/api/v1", s.trim_end_matches('/')))
            .collect();
        if bases.is_empty() {
            return Err(Error::usage("--server: give at least one URL"));
        }
        Ok(Self {
            agent: config.build().into(),
            bases,
            auth: Zeroizing::new(format!("Bearer {}", token.trim())),
        })
    }

    /// One request, to each instance in turn while one cannot be reached
    /// or answers 503; a POST or PUT carries one `Idempotency-Key` for all
    /// its tries, so a write that landed before a connection broke is not
    /// made twice.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        if_match: Option<i64>,
    ) -> Result<Value> {
        let key = match method {
            "POST" | "PUT" => Some(idempotency_key()?),
            _ => None,
        };
        let mut last = None;
        for base in &self.bases {
            match self.call_one(base, method, path, body.clone(), if_match, key.as_deref()) {
                Err(Error::Remote { status, message }) if status == 0 || status == 503 => {
                    tracing::debug!("{base}: {message}; trying the next instance");
                    last = Some(Error::Remote { status, message });
                }
                other => return other,
            }
        }
        Err(last.expect("at least one instance"))
    }

    /// One request to one instance; a JSON answer, or the service's error
    /// as sealctl's.
    fn call_one(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        if_match: Option<i64>,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        let url = format!("{base}{path}");
        let auth = self.auth.as_str();
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", auth).call(),
            ("PUT", Some(b)) => {
                let mut r = self.agent.put(&url).header("Authorization", auth);
                if let Some(v) = if_match {
                    r = r.header("If-Match", v.to_string());
                }
                if let Some(k) = idempotency_key {
                    r = r.header("Idempotency-Key", k);
                }
                r.send_json(b)
            }
            (_, b) => {
                let mut r = self.agent.post(&url).header("Authorization", auth);
                if let Some(k) = idempotency_key {
                    r = r.header("Idempotency-Key", k);
                }
                r.send_json(b.unwrap_or_else(|| json!({})))
            }
        };
        let mut response = sent.map_err(|e| Error::Remote {
            status: 0,
            message: format!("cannot reach {}: {e}", base.trim_end_matches("/api/v1")),
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(doc);
        }
        let mut message = doc["error"]["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned);
        // The service words its refusals in API fields; say which flag of
        // sealctl's asks for the same.
        let allow = &doc["error"]["allow"];
        let name = allow["name"].as_str().unwrap_or("");
        let flag = match allow["field"].as_str() {
            Some("allow_name") => Some(format!("--allow-name {name}")),
            Some("allow_production") => Some(format!("--allow-production {name}")),
            Some("allow_empty") => Some("--allow-empty".to_owned()),
            _ => None,
        };
        if let Some(flag) = flag {
            message.push_str(&format!(" (with sealctl: {flag})"));
        }
        if let Some(hosts) = doc["error"]["proxy_hosts"].as_array() {
            let hosts: Vec<&str> = hosts.iter().filter_map(|h| h.as_str()).collect();
            message.push_str(&format!(
                " (or, with sealctl: {})",
                sealinit_store::proxy_flags(&hosts)
            ));
        }
        if let ("repo_not_found", Some(repo)) = (
            doc["error"]["code"].as_str().unwrap_or(""),
            doc["error"]["repo"].as_str(),
        ) {
            message.push_str(&format!(" (with sealctl: sealctl repos create {repo})"));
        }
        Err(Error::Remote { status, message })
    }

    fn seal_to(&self, repo: &str, bytes: &[u8]) -> Result<(String, String)> {
        let pk = self.call(
            "GET",
            &format!("{}/secrets/public-key", holder_path(repo)?),
            None,
            None,
        )?;
        let key: [u8; 32] = pk["key"]
            .as_str()
            .and_then(|k| B64.decode(k).ok())
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::Remote {
                status: 0,
                message: "the service sent no valid public key".into(),
            })?;
        let sealed = crypto_box::PublicKey::from(key)
            .seal(&mut crypto_box::aead::OsRng, bytes)
            .map_err(|_| Error::os("sealing a value", std::io::Error::other("crypto_box_seal")))?;
        Ok((
            B64.encode(sealed),
            pk["key_id"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// Sets one value, sealed; `if_version` as `If-Match`.
    pub fn set_one(
        &self,
        repo: &str,
        name: &str,
        value: &[u8],
        flags: SetOne<'_>,
    ) -> Result<Value> {
        let SetOne {
            if_version,
            allow_production,
            allow_name,
            route,
        } = flags;
        let (enc, key_id) = self.seal_to(repo, value)?;
        // An empty value got here only with --allow-empty.
        let mut body = json!({"encrypted_value": enc, "key_id": key_id,
            "allow_production": allow_production, "allow_name": allow_name,
            "allow_empty": value.is_empty()});
        route_fields(&mut body, route);
        self.call(
            "PUT",
            &format!("{}/secrets/{name}", holder_path(repo)?),
            Some(body),
            if_version,
        )
    }

    /// Removes a whole repository: its stored spelling and the count.
    /// Creates a repository; an existing one is the store's error.
    pub fn create_repo(&self, repo: &str) -> Result<Value> {
        sealinit_store::validate_repo(repo)?;
        match self.call("POST", "/repos", Some(json!({"name": repo})), None) {
            Err(Error::Remote { status: 409, .. }) => Err(sealinit_store::StoreError::RepoExists {
                repo: repo.to_owned(),
            }
            .into()),
            other => other,
        }
    }

    pub fn remove_repo(&self, repo: &str) -> Result<Value> {
        self.call(
            "DELETE",
            &format!("/repos/{}", repo_path(repo)?),
            None,
            None,
        )
    }

    /// Imports a whole .env or JSON text, sealed: all or nothing.
    pub fn import(
        &self,
        repo: &str,
        format: Format,
        text: &[u8],
        allow: &[String],
        allow_names: &[String],
        whole: &sealinit_store::RouteChange,
    ) -> Result<Vec<Value>> {
        let (enc, key_id) = self.seal_to(repo, text)?;
        let mut body = json!({
            "format": match format { Format::Json => "json", Format::Env { .. } => "env" },
            "expand": matches!(format, Format::Env { expand: true }),
            "encrypted_content": enc,
            "key_id": key_id,
            "allow_production": allow,
            "allow_names": allow_names,
        });
        route_fields(&mut body, whole);
        let doc = self.call(
            "POST",
            &format!("/repos/{}/import", repo_path(repo)?),
            Some(body),
            None,
        )?;
        Ok(doc["secrets"].as_array().cloned().unwrap_or_default())
    }

    /// Every secret's metadata.
    pub fn list(&self, repo: &str) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        for page in 1.. {
            let doc = self.call(
                "GET",
                &format!("{}/secrets?per_page=100&page={page}", holder_path(repo)?),
                None,
                None,
            )?;
            let got = doc["secrets"].as_array().cloned().unwrap_or_default();
            let done = got.len() < 100;
            all.extend(got);
            if done {
                break;
            }
        }
        Ok(all)
    }

    pub fn get(&self, repo: &str, name: &str) -> Result<Value> {
        self.call(
            "GET",
            &format!("{}/secrets/{name}", holder_path(repo)?),
            None,
            None,
        )
    }

    pub fn remove(&self, repo: &str, name: &str) -> Result<()> {
        self.call(
            "DELETE",
            &format!("{}/secrets/{name}", holder_path(repo)?),
            None,
            None,
        )
        .map(|_| ())
    }

    pub fn history(&self, repo: &str, name: &str) -> Result<Vec<Value>> {
        let doc = self.call(
            "GET",
            &format!("{}/secrets/{name}/versions", holder_path(repo)?),
            None,
            None,
        )?;
        Ok(doc["versions"].as_array().cloned().unwrap_or_default())
    }

    pub fn rollback(&self, repo: &str, name: &str, to: i64) -> Result<Value> {
        self.call(
            "POST",
            &format!("{}/secrets/{name}/rollback", holder_path(repo)?),
            Some(json!({"to": to})),
            None,
        )
    }

    pub fn repos(&self) -> Result<Vec<Value>> {
        let doc = self.call("GET", "/repos", None, None)?;
        Ok(doc["repos"].as_array().cloned().unwrap_or_default())
    }

    /// Every audit record `repo` and `since` select, page by page.
    pub fn audit(&self, repo: Option<&str>, since: Option<i64>) -> Result<Vec<Value>> {
        let mut q = vec!["limit=1000".to_owned()];
        if let Some(r) = repo {
            q.push(format!("repo={}", repo_path(r)?));
        }
        if let Some(s) = since {
            q.push(format!("since={s}"));
        }
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = q.clone();
            if let Some(c) = &cursor {
                query.push(format!("cursor={c}"));
            }
            let doc = self.call("GET", &format!("/audit?{}", query.join("&")), None, None)?;
            records.extend(doc["records"].as_array().cloned().unwrap_or_default());
            match doc["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(records),
            }
        }
    }

    /// Mints a per-launch bundle of `repo`.
    pub fn mint(
        &self,
        repo: &str,
        environment: Option<&str>,
        label: Option<&str>,
        ttl: Option<Duration>,
        allow_empty: bool,
    ) -> Result<Minted> {
        let ttl = ttl.map_or_else(|| "none".to_owned(), |t| format!("{}s", t.as_secs()));
        let mut body = json!({"ttl": ttl, "allow_empty": allow_empty});
        if let Some(e) = environment {
            body["environment"] = json!(e);
        }
        if let Some(l) = label {
            body["label"] = json!(l);
        }
        let doc = self.call(
            "POST",
            &format!("/repos/{}/bundles", repo_path(repo)?),
            Some(body),
            None,
        )?;
        let bad = || Error::Remote {
            status: 0,
            message: "the service sent a malformed bundle".into(),
        };
        let part = |bundle: &str, key: &str| -> Result<(Zeroizing<Vec<u8>>, SecretKey)> {
            let b = Zeroizing::new(
                doc[bundle]
                    .as_str()
                    .and_then(|b| B64.decode(b).ok())
                    .ok_or_else(bad)?,
            );
            let raw = Zeroizing::new(
                doc[key]
                    .as_str()
                    .and_then(|k| B64.decode(k).ok())
                    .ok_or_else(bad)?,
            );
            let raw: &[u8; 32] = raw.as_slice().try_into().map_err(|_| bad())?;
            let mut k = SecretKey::zeroed().map_err(|e| Error::os("locked memory", e))?;
            k.expose_mut().copy_from_slice(raw);
            Ok((b, k))
        };
        let (bundle, key) = part("bundle", "key")?;
        let proxy = match doc["proxy_bundle"].is_string() {
            true => Some(part("proxy_bundle", "proxy_key")?),
            false => None,
        };
        Ok(Minted {
            bundle,
            key,
            proxy,
            label: doc["label"].as_str().unwrap_or_default().to_owned(),
            names: doc["names"]
                .as_array()
                .map(|n| {
                    n.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            created_at: doc["created_at"].as_str().map(str::to_owned),
            expires_at: doc["expires_at"].as_str().map(str::to_owned),
        })
    }
}

/// The API's fields for a route change (only those given).
fn route_fields(body: &mut Value, route: &sealinit_store::RouteChange) {
    if let Some(d) = route.delivery {
        body["delivery"] = json!(d);
    }
    if let Some(h) = &route.hosts {
        body["hosts"] = json!(h);
    }
    if let Some(p) = route.placeholder {
        body["placeholder"] = json!(p);
    }
    if let Some(b) = route.in_body {
        body["in_body"] = json!(b);
    }
    match &route.repos {
        Some(None) => body["visibility"] = json!("all"),
        Some(Some(list)) => {
            body["visibility"] = json!("selected");
            body["selected_repositories"] = json!(list);
        }
        None => {}
    }
}
