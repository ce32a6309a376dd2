//! A launch's sealed parts, made once for every entry point (`sealctl seal
//! --repo`, `sealctl run`, the API's mint): the sandbox's bundle and, when
//! the repository has proxy secrets, the egress proxy's, each under a fresh
//! key. The sandbox's part holds env and setup values and, for each proxy
//! secret, a placeholder made for this launch; it never holds a proxy
//! value. The proxy's part holds each proxy secret's value with its
//! binding (hosts and placeholder), and the other values, so that the
//! proxy can refuse them leaving.

use std::collections::BTreeMap;

use sealinit_core::bundle::{self, Binding, BundleError, Delivery, Entry, Header, NONCE_LEN};
use sealinit_core::secret::{SecretKey, SecretValue};

use crate::{RepoSecrets, Result, StoreError, route};

/// One sealed part and its key.
pub struct Part {
    pub bundle: Vec<u8>,
    pub key: SecretKey,
    pub header: Header,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// The parts of one launch.
#[derive(Debug)]
pub struct Launch {
    pub sandbox: Part,
    /// Present when the repository has proxy secrets.
    pub proxy: Option<Part>,
    /// The proxy secrets' names.
    pub proxied: Vec<String>,
}

fn os(e: impl std::fmt::Display) -> StoreError {
    StoreError::Os {
        op: "getrandom",
        source: std::io::Error::other(e.to_string()),
    }
}

fn seal(header: &Header, entries: &[Entry]) -> Result<Part> {
    let key = SecretKey::generate().map_err(os)?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(os)?;
    let bundle = bundle::seal(&key, header, entries, &nonce).map_err(|e| match e {
        BundleError::Payload(p) => StoreError::Payload(p),
        other => StoreError::Seal(other),
    })?;
    Ok(Part {
        bundle,
        key,
        header: header.clone(),
    })
}

/// Seals `found` (a repository's secrets) for one launch under `header`
/// (which names the repository): fresh keys, fresh placeholders.
pub fn seal_launch(found: RepoSecrets, header: Header) -> Result<Launch> {
    let RepoSecrets {
        entries,
        routes,
        egress,
        ..
    } = found;
    let mut sandbox = Vec::with_capacity(entries.len());
    let mut values = Vec::new();
    let mut bindings = BTreeMap::new();
    for (e, r) in entries.into_iter().zip(routes) {
        match r.delivery {
            Delivery::Proxy => {
                let placeholder = route::placeholder(r.placeholder, e.value.expose())?;
                sandbox.push(Entry {
                    name: e.name.clone(),
                    value: SecretValue::from(placeholder.clone().into_bytes()),
                    delivery: Delivery::Proxy,
                });
                bindings.insert(
                    e.name.clone(),
                    Binding {
                        hosts: r.hosts,
                        placeholder,
                        in_body: r.in_body,
                    },
                );
                values.push(e);
            }
            _ => sandbox.push(e),
        }
    }
    let sandbox_part = seal(&header, &sandbox)?;
    if bindings.is_empty() {
        return Ok(Launch {
            sandbox: sandbox_part,
            proxy: None,
            proxied: Vec::new(),
        });
    }
    let proxied = bindings.keys().cloned().collect();
    // The proxy's part: the real values of the proxy secrets, and the env
    // and setup values (moved, not copied) for its leak check.
    let mut proxy: Vec<Entry> = sandbox
        .into_iter()
        .filter(|e| e.delivery != Delivery::Proxy)
        .collect();
    proxy.extend(values);
    let mut proxy_header = header.clone().proxy_part(bindings);
    proxy_header.egress = (egress != Default::default()).then_some(egress);
    let proxy_part = seal(&proxy_header, &proxy)?;
    Ok(Launch {
        sandbox: sandbox_part,
        proxy: Some(proxy_part),
        proxied,
    })
}
