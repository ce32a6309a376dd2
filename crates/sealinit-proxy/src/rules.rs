//! What the proxy decides about one request, from the launch's proxy part
//! alone (pure: no I/O): which placeholders become which values toward this
//! destination, and what is refused. The values stay in the part's locked,
//! decrypted buffer; nothing here copies one except into the outgoing
//! header it is put into.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sealinit_core::bundle::{Delivery, EgressDefault, OpenedBundle};
use zeroize::Zeroizing;

/// A host pattern of a binding: `name` or `*.domain`, with an optional port
/// (443 when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: String,
    wildcard: bool,
    port: u16,
}

impl HostPattern {
    pub fn parse(text: &str) -> Self {
        let text = text.to_ascii_lowercase();
        let (name, port) = match text.rsplit_once(':') {
            Some((n, p)) => (n.to_owned(), p.parse().unwrap_or(0)),
            None => (text.clone(), 443),
        };
        match name.strip_prefix("*.") {
            Some(domain) => Self {
                name: domain.to_owned(),
                wildcard: true,
                port,
            },
            None => Self {
                name,
                wildcard: false,
                port,
            },
        }
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        port == self.port
            && match self.wildcard {
                false => host == self.name,
                true => {
                    host.len() > self.name.len() + 1
                        && host.ends_with(&self.name)
                        && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
                }
            }
    }
}

/// One proxy secret: its name, placeholder and hosts; its value is entry
/// `entry` of the part.
#[derive(Debug)]
struct Bound {
    name: String,
    hosts: Vec<HostPattern>,
    entry: usize,
    /// Also replaced in request bodies.
    in_body: bool,
}

/// Why a request is refused: said to the agent (403), audited. Names and
/// hosts only, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("secret {name} may be sent to {allowed} only, not to {host}:{port}")]
    WrongHost {
        name: String,
        allowed: String,
        host: String,
        port: u16,
    },
    #[error(
        "the request carries the value of secret {name} (or an encoding of it); values of this launch's secrets never leave through the proxy"
    )]
    Leak { name: String },
    #[error(
        "the request carries the placeholder of secret {name} over plain HTTP; secrets go over HTTPS only"
    )]
    Cleartext { name: String },
    #[error("this repository's egress policy does not allow {host}:{port} (its default is deny)")]
    Policy { host: String, port: u16 },
    #[error("{0}")]
    Mismatch(String),
}

impl Refusal {
    /// The secret it concerns, if one.
    pub fn secret(&self) -> Option<String> {
        match self {
            Refusal::WrongHost { name, .. }
            | Refusal::Leak { name }
            | Refusal::Cleartext { name } => Some(name.clone()),
            Refusal::Mismatch(_) | Refusal::Policy { .. } => None,
        }
    }
}

/// Text with values put in: wiped when dropped.
pub type Replaced = Zeroizing<Vec<u8>>;

/// The launch's rules: placeholders to find, values to refuse.
pub struct Rules {
    part: OpenedBundle,
    bound: Vec<Bound>,
    placeholders: AhoCorasick,
    /// Every value of the launch (of at least 8 bytes) and its encodings:
    /// raw, base64 at each alignment, URL- and JSON-encoded (the masker's
    /// forms), hex (both cases) and base64url at each alignment; in one
    /// compact automaton (no copy of a value besides its patterns).
    leaks: Option<AhoCorasick>,
    /// The secret of each pattern of `leaks`.
    leak_names: Vec<String>,
    /// Requests without a secret: `None` lets them go anywhere; else only
    /// to these hosts (and those of the secrets' bindings).
    allowed: Option<Vec<HostPattern>>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl Rules {
    /// The rules of a proxy part, opened.
    pub fn new(part: OpenedBundle) -> Result<Self, String> {
        let header = part.header().clone();
        let bindings = header
            .bindings
            .ok_or("the bundle is not a proxy part (no bindings): give the proxy the part `sealctl seal --proxy-out` wrote")?;
        let mut bound = Vec::new();
        let mut patterns = Vec::new();
        for (i, e) in part.entries().enumerate() {
            if e.delivery() != Delivery::Proxy {
                continue;
            }
            let b = bindings
                .get(e.name())
                .ok_or_else(|| format!("proxy secret {} has no binding", e.name()))?;
            patterns.push(b.placeholder.clone());
            bound.push(Bound {
                name: e.name().to_owned(),
                hosts: b.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
                entry: i,
                in_body: b.in_body,
            });
        }
        let placeholders = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| e.to_string())?;
        // Values shorter than 8 bytes are too common to refuse on sight.
        let (mut forms, mut leak_names) = (Vec::new(), Vec::new());
        for e in part.entries().filter(|e| e.value().len() >= 8) {
            let more = more_forms(e.value()).into_iter().map(Zeroizing::new);
            for f in sealinit_mask::forms(e.value(), 8).into_iter().chain(more) {
                forms.push(f);
                leak_names.push(e.name().to_owned());
            }
        }
        let leaks = (!forms.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(forms.iter().map(|f| f.as_slice()))
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        drop(forms);
        let allowed = header.egress.as_ref().and_then(|e| match e.default {
            EgressDefault::Allow => None,
            EgressDefault::Deny => Some(e.allow.iter().map(|h| HostPattern::parse(h)).collect()),
        });
        Ok(Self {
            bound,
            placeholders,
            leaks,
            leak_names,
            allowed,
            part,
        })
    }

    fn value(&self, b: &Bound) -> &[u8] {
        self.part
            .entries()
            .nth(b.entry)
            .expect("an entry of the part")
            .value()
    }

    /// The name of a value (or an encoding of one) in `data`, if any.
    pub fn leak(&self, data: &[u8]) -> Option<&str> {
        let m = self.leaks.as_ref()?.find(data)?;
        Some(&self.leak_names[m.pattern().as_usize()])
    }

    /// How many bytes either side of a seam between two parts of a body a
    /// value (or a form of one) can span: the longest form's length,
    /// less one.
    pub fn seam(&self) -> usize {
        self.leaks
            .as_ref()
            .map_or(0, |m| m.max_pattern_len())
            .saturating_sub(1)
    }

    /// `text` with each placeholder replaced by its value, when every
    /// placeholder in it is bound to `host:port`; otherwise the refusal.
    /// `None` when it holds no placeholder.
    pub fn substitute(
        &self,
        text: &[u8],
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Refusal> {
        self.substitute_where(text, host, port, tls, |_| true)
    }

    /// Whether a secret bound to `host:port` asks to be replaced in
    /// request bodies (which are then read whole).
    pub fn replaces_in_body(&self, host: &str, port: u16) -> bool {
        self.bound
            .iter()
            .any(|b| b.in_body && b.hosts.iter().any(|h| h.matches(host, port)))
    }

    /// A whole request body to `host:port` (over TLS), checked as
    /// [`Rules::check_body`] does, with the placeholders of the secrets
    /// that ask for it replaced: the new body (`None`: unchanged) and the
    /// names replaced.
    pub fn substitute_body(
        &self,
        body: &[u8],
        host: &str,
        port: u16,
    ) -> Result<(Option<Replaced>, Vec<String>), Refusal> {
        self.check_body(body, host, port, true)?;
        let mut names = Vec::new();
        for m in self.placeholders.find_iter(body) {
            let b = &self.bound[m.pattern().as_usize()];
            if b.in_body && !names.contains(&b.name) {
                names.push(b.name.clone());
            }
        }
        let out = self.substitute_where(body, host, port, true, |b| b.in_body)?;
        Ok((out, names))
    }

    fn substitute_where(
        &self,
        text: &[u8],
        host: &str,
        port: u16,
        tls: bool,
        replace: impl Fn(&Bound) -> bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Refusal> {
        // It holds values: wiped when dropped.
        let mut out = Zeroizing::new(Vec::new());
        let mut last = 0;
        for m in self.placeholders.find_iter(text) {
            let b = &self.bound[m.pattern().as_usize()];
            if !replace(b) {
                continue;
            }
            if !tls {
                return Err(Refusal::Cleartext {
                    name: b.name.clone(),
                });
            }
            self.may_carry(b, host, port)?;
            out.extend_from_slice(&text[last..m.start()]);
            out.extend_from_slice(self.value(b));
            last = m.end();
        }
        if last == 0 {
            return Ok(None);
        }
        out.extend_from_slice(&text[last..]);
        Ok(Some(out))
    }

    /// A header value: placeholders replaced as [`Rules::substitute`]
    /// does, inside `Basic` credentials too (decoded, replaced, encoded).
    pub fn header(
        &self,
        value: &[u8],
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Refusal> {
        if let Some(creds) = strip_prefix_ci(value, b"basic ") {
            if let Ok(decoded) = B64.decode(creds.trim_ascii()) {
                let decoded = Zeroizing::new(decoded);
                if let Some(d) = self.substitute(&decoded, host, port, tls)? {
                    let encoded = Zeroizing::new(B64.encode(&*d));
                    let mut out = Zeroizing::new(b"Basic ".to_vec());
                    out.extend_from_slice(encoded.as_bytes());
                    return Ok(Some(out));
                }
            }
        }
        self.substitute(value, host, port, tls)
    }

    /// Whether secret `b` may go to `host:port`.
    fn may_carry(&self, b: &Bound, host: &str, port: u16) -> Result<(), Refusal> {
        match b.hosts.iter().any(|h| h.matches(host, port)) {
            true => Ok(()),
            false => Err(Refusal::WrongHost {
                name: b.name.clone(),
                allowed: self.allowed(b),
                host: host.to_owned(),
                port,
            }),
        }
    }

    fn allowed(&self, b: &Bound) -> String {
        b.hosts
            .iter()
            .map(|h| {
                let name = match h.wildcard {
                    true => format!("*.{}", h.name),
                    false => h.name.clone(),
                };
                match h.port {
                    443 => name,
                    p => format!("{name}:{p}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether a request that carries no secret may go to `host:port`.
    pub fn may_go(&self, host: &str, port: u16) -> Result<(), Refusal> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        let bound = self.bound.iter().flat_map(|b| &b.hosts);
        match allowed.iter().chain(bound).any(|h| h.matches(host, port)) {
            true => Ok(()),
            false => Err(Refusal::Policy {
                host: host.to_owned(),
                port,
            }),
        }
    }

    /// A part of a request body (or of a stream) to `host:port`: no value
    /// of the launch, and no placeholder toward a host it is not bound to
    /// or, without `tls`, at all.
    pub fn check_body(&self, data: &[u8], host: &str, port: u16, tls: bool) -> Result<(), Refusal> {
        if let Some(name) = self.leak(data) {
            return Err(Refusal::Leak { name: name.into() });
        }
        for m in self.placeholders.find_iter(data) {
            let b = &self.bound[m.pattern().as_usize()];
            if !tls {
                return Err(Refusal::Cleartext {
                    name: b.name.clone(),
                });
            }
            self.may_carry(b, host, port)?;
        }
        Ok(())
    }

    /// How many bytes either side of a seam between two parts of a body
    /// [`Rules::check_body`] must see together.
    pub fn body_seam(&self) -> usize {
        let placeholders = self.placeholders.max_pattern_len().saturating_sub(1);
        self.seam().max(placeholders)
    }

    /// The proxy secrets whose placeholders are in `texts`, each once.
    pub fn names_in<'a>(&self, texts: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for t in texts {
            for m in self.placeholders.find_iter(t) {
                let n = &self.bound[m.pattern().as_usize()].name;
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    /// The names of the proxy secrets.
    pub fn bound_names(&self) -> Vec<&str> {
        self.bound.iter().map(|b| b.name.as_str()).collect()
    }
}

/// The hex (lower and upper case) and base64url forms of `value`. Inside
/// a longer encoded input the value starts at one of three offsets of a
/// 3-byte group: the value from its byte 0, 2 or 1 on is then aligned, and
/// its encoding (minus the last character, which depends on what follows)
/// appears as is.
fn more_forms(value: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![hex.to_ascii_uppercase().into_bytes(), hex.into_bytes()];
    for skip in 0..3 {
        let mut enc = URL_SAFE_NO_PAD.encode(&value[skip..]).into_bytes();
        enc.pop();
        if enc.len() >= 8 {
            out.push(enc);
        }
    }
    out
}

fn strip_prefix_ci<'a>(v: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &v[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64url_forms_are_found_at_any_offset() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let v = b"app-env-value-2e81c4b7";
        let forms = more_forms(v);
        let ac = AhoCorasick::new(&forms).unwrap();
        for pre in ["", "x", "xy", "xyz"] {
            let mut input = pre.as_bytes().to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"tail");
            assert!(
                ac.find(&URL_SAFE_NO_PAD.encode(&input)).is_some(),
                "{pre:?}"
            );
            let hex: String = input.iter().map(|b| format!("{b:02X}")).collect();
            assert!(ac.find(&hex).is_some());
        }
        assert!(ac.find("nothing-of-it-here").is_none());
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("api.stripe.com");
        assert!(p.matches("API.stripe.com", 443));
        assert!(!p.matches("api.stripe.com", 8443));
        assert!(!p.matches("xapi.stripe.com", 443));
        let w = HostPattern::parse("*.example.com:8443");
        assert!(w.matches("a.b.example.com", 8443));
        assert!(!w.matches("example.com", 8443));
        assert!(!w.matches("badexample.com", 8443));
        assert!(!w.matches("a.example.com", 443));
    }
}
