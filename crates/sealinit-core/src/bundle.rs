//! The sealed bundle, formats 1 and 2 (`docs/FORMAT.md`). Pure format
//! code: no I/O, no clock (callers pass the time), no `unsafe`.

use std::collections::HashSet;
use std::ffi::CStr;
use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::{SecretBuf, SecretKey, SecretValue};

pub const MAGIC: &[u8; 8] = b"SEALINIT";
/// The newest format version this code reads and writes. A writer emits
/// version 1 unless the header names a repository (version 2: the
/// repository, and each entry's delivery), so bundles without one still
/// open in sealinit 0.1.
pub const VERSION: u8 = 2;
/// magic + version + header_len
pub const PREFIX_LEN: usize = 13;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
pub const MIN_HEADER_LEN: usize = 2;
pub const MAX_HEADER_LEN: usize = 65_536;
pub const MAX_LABEL_LEN: usize = 1_024;
/// Largest plaintext payload.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
pub const MAX_ENTRIES: usize = 10_000;
/// Largest `NAME=value` (without its NUL): Linux `MAX_ARG_STRLEN` − 1.
pub const MAX_ENTRY_LEN: usize = 131_071;
/// Prefix of variables that configure sealinit; never sealed, never passed on.
pub const RESERVED_PREFIX: &str = "SEALINIT_";
/// Largest possible bundle file.
pub const MAX_BUNDLE_LEN: usize =
    PREFIX_LEN + MAX_HEADER_LEN + NONCE_LEN + MAX_PAYLOAD_LEN + TAG_LEN;

const COUNT_LEN: usize = 4;
/// name_len, value_len, '=', NUL; version 2 adds the delivery byte.
const ENTRY_FIXED_LEN_V1: usize = 2 + 4 + 1 + 1;
const ENTRY_FIXED_LEN: usize = ENTRY_FIXED_LEN_V1 + 1;

/// Where an entry goes (format version 2; version 1 entries are all
/// [`Delivery::Env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// An environment variable of the setup steps and the command.
    #[default]
    Env,
    /// An environment variable of the setup steps only: wiped before the
    /// command starts.
    Setup,
    /// Outside the sandbox: the sandbox's bundle holds a placeholder (an
    /// environment variable of the command), the proxy's the value.
    Proxy,
}

impl Delivery {
    pub const ALL: [Delivery; 3] = [Delivery::Env, Delivery::Setup, Delivery::Proxy];

    /// Its byte in a version 2 payload.
    pub fn byte(self) -> u8 {
        match self {
            Delivery::Env => 0,
            Delivery::Setup => 1,
            Delivery::Proxy => 2,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.byte() == b)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Env => "env",
            Delivery::Setup => "setup",
            Delivery::Proxy => "proxy",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bundle header: readable without the key, authenticated with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub version: u8,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the bundle is refused at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Version 2: the repository the bundle was minted from, set by the
    /// store or service (never by the caller who asks for the bundle), so
    /// that `sealinit --expect-repo` can check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Version 2: `"proxy"` for the egress proxy's part of a launch (which
    /// sealinit refuses to open); absent for the sandbox's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// Version 2, proxy part: each proxy secret's hosts and placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<std::collections::BTreeMap<String, Binding>>,
    /// Version 2, proxy part: what happens to requests that carry no
    /// secret (absent: they go out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
}

/// A repository's egress policy for requests that carry no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// `allow` (the default) or `deny`.
    pub default: EgressDefault,
    /// Hosts always allowed (`name` or `*.domain`, optional `:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressDefault {
    #[default]
    Allow,
    Deny,
}

/// Which part of a launch a bundle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Proxy,
}

/// Where a proxy secret may go, and what stands for it in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub hosts: Vec<String>,
    pub placeholder: String,
    /// The placeholder is also replaced in request bodies to the hosts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_body: bool,
}

impl Header {
    pub fn new(created: u64, expires: Option<u64>, label: Option<String>) -> Self {
        Self {
            version: 1,
            created,
            expires,
            label,
            repo: None,
            part: None,
            bindings: None,
            egress: None,
        }
    }

    /// The same header as the proxy's part of a launch (version 2), with
    /// each proxy secret's binding.
    pub fn proxy_part(self, bindings: std::collections::BTreeMap<String, Binding>) -> Self {
        Self {
            part: Some(Part::Proxy),
            bindings: Some(bindings),
            ..self
        }
    }

    /// The same header naming the repository it was minted from
    /// (format version 2).
    pub fn with_repo(self, repo: impl Into<String>) -> Self {
        Self {
            version: 2,
            repo: Some(repo.into()),
            ..self
        }
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

/// A region of the file, for "truncated" errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Prefix,
    Header,
    Nonce,
    Ciphertext,
    Tag,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Region::Prefix => "magic/version/header length",
            Region::Header => "header",
            Region::Nonce => "nonce",
            Region::Ciphertext => "ciphertext",
            Region::Tag => "authentication tag",
        })
    }
}

/// Why bytes are not a usable bundle. Messages never contain payload bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("is empty (0 bytes); expected a sealed bundle written by `sealctl seal`")]
    Empty,
    #[error("not a sealinit bundle (it does not start with the SEALINIT magic)")]
    NotABundle,
    #[error(
        "format version {0} is newer than this sealinit understands (version {VERSION}); upgrade sealinit"
    )]
    NewerVersion(u8),
    #[error("malformed: format version 0 does not exist")]
    VersionZero,
    #[error("truncated: the file ends inside the {0}")]
    Truncated(Region),
    #[error("malformed: header length {0} is outside 2..=65536")]
    HeaderLength(usize),
    #[error("malformed: header is not valid: {0}")]
    HeaderInvalid(String),
    #[error("malformed: {0} bytes is larger than any bundle (at most {MAX_BUNDLE_LEN})")]
    TooLarge(usize),
    #[error("authentication failed: wrong key, or the file was modified or truncated")]
    DecryptionFailed,
    #[error("malformed payload: {0}")]
    Payload(#[from] PayloadError),
    #[error(
        "label is {}, not the expected {expected:?}: this bundle was sealed for something else",
        found.as_ref().map_or("absent".to_owned(), |f| format!("{f:?}"))
    )]
    LabelMismatch {
        expected: String,
        found: Option<String>,
    },
    #[error(
        "repository is {}, not the expected {expected:?}: this bundle was minted from another repository",
        found.as_ref().map_or("not named (the bundle was not minted from a repository)".to_owned(), |f| format!("{f:?}"))
    )]
    RepoMismatch {
        expected: String,
        found: Option<String>,
    },
    #[error(
        "is the egress proxy's part of a launch (its values must never enter the sandbox); give sealinit the sandbox's bundle"
    )]
    ProxyPart,
    #[error("expired at {} (now {}); seal a new bundle", crate::time::rfc3339(*expires), crate::time::rfc3339(*now))]
    Expired { expires: u64, now: u64 },
}

/// Why a set of entries cannot be sealed, or a payload is malformed.
/// Names are not secret and may appear; values never do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("invalid name {0}: names must match [A-Za-z_][A-Za-z0-9_]*")]
    InvalidName(String),
    #[error("name {0} is reserved: the SEALINIT_ prefix configures sealinit itself")]
    ReservedName(String),
    #[error("the value of {0} contains a NUL byte, which an environment variable cannot hold")]
    NulInValue(String),
    #[error("duplicate name {0}")]
    DuplicateName(String),
    #[error(
        "{name}=value is {len} bytes, over the {MAX_ENTRY_LEN}-byte limit of one environment string (MAX_ARG_STRLEN)"
    )]
    EntryTooLarge { name: String, len: usize },
    #[error("{count} entries is more than the {MAX_ENTRIES} allowed")]
    TooManyEntries { count: usize },
    #[error("the payload would be {len} bytes, over the {MAX_PAYLOAD_LEN}-byte limit")]
    TooLarge { len: usize },
    #[error("name {0} changes how programs load code; refused unless sealed with --allow-name {0}")]
    CodeLoadingName(String),
    #[error("{0}")]
    Structure(&'static str),
}

/// Names that make programs load or run other code: `LD_*` (the dynamic
/// loader), shell start-up files, and interpreter start-up options. A
/// secret store should not be able to inject code into every process of a
/// sandbox, so sealing one needs an explicit `--allow-name`.
pub fn changes_code_loading(name: &str) -> bool {
    const NAMES: [&str; 9] = [
        "BASH_ENV",
        "ENV",
        "PROMPT_COMMAND",
        "NODE_OPTIONS",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "RUBYOPT",
        "JAVA_TOOL_OPTIONS",
        "GCONV_PATH",
    ];
    name.starts_with("LD_") || NAMES.contains(&name)
}

/// Refuses code-loading names (see [`changes_code_loading`]) not in `allowed`.
pub fn check_name_policy(entries: &[Entry], allowed: &[String]) -> Result<(), PayloadError> {
    match entries
        .iter()
        .find(|e| changes_code_loading(&e.name) && !allowed.contains(&e.name))
    {
        Some(e) => Err(PayloadError::CodeLoadingName(e.name.clone())),
        None => Ok(()),
    }
}

/// A name/value pair to seal, and where it goes.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub value: SecretValue,
    pub delivery: Delivery,
}

impl Entry {
    /// An environment variable of the setup steps and the command.
    pub fn env(name: impl Into<String>, value: SecretValue) -> Self {
        Self {
            name: name.into(),
            value,
            delivery: Delivery::Env,
        }
    }
}

/// A name as shown in errors: escaped, and cut short if long.
fn shown(name: &[u8]) -> String {
    let cut = &name[..name.len().min(64)];
    let mut s = format!("{:?}", String::from_utf8_lossy(cut));
    if name.len() > 64 {
        s.push('…');
    }
    s
}

/// Checks one name: syntax and the reserved prefix.
pub fn validate_name(name: &[u8]) -> Result<(), PayloadError> {
    let ok = match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    };
    if !ok {
        return Err(PayloadError::InvalidName(shown(name)));
    }
    if name.starts_with(RESERVED_PREFIX.as_bytes()) {
        return Err(PayloadError::ReservedName(shown(name)));
    }
    Ok(())
}

fn check_label(header: &Header) -> Result<(), BundleError> {
    for (what, text) in [("label", &header.label), ("repo", &header.repo)] {
        if text.as_ref().is_some_and(|t| t.len() > MAX_LABEL_LEN) {
            return Err(BundleError::HeaderInvalid(format!(
                "{what} is longer than {MAX_LABEL_LEN} bytes"
            )));
        }
    }
    let v1_extra = header.part.is_some() || header.bindings.is_some() || header.egress.is_some();
    match (header.version, &header.repo) {
        (1, Some(_)) => Err(BundleError::HeaderInvalid(
            "a version 1 header names no repository".into(),
        )),
        (1, None) if v1_extra => Err(BundleError::HeaderInvalid(
            "a version 1 header has no part or bindings".into(),
        )),
        (2, None) => Err(BundleError::HeaderInvalid(
            "a version 2 header names its repository".into(),
        )),
        _ if header.bindings.is_some() != header.part.is_some()
            || (header.egress.is_some() && header.part.is_none()) =>
        {
            Err(BundleError::HeaderInvalid(
                "bindings and egress belong to the proxy part, and the proxy part has bindings"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

/// Validates entries for sealing and returns the payload length: each
/// entry (see [`validate_each`]), then the count and total size limits.
pub fn validate_entries(entries: &[Entry]) -> Result<usize, PayloadError> {
    validate_each(entries)?;
    check_totals(entries.iter().map(|e| (e.name.len(), e.value.len())))
}

/// Checks what a set of entries adds up to, from their `(name length,
/// value length)` pairs: the entry count and the payload size limits.
/// Returns the payload size. The store checks a repository with it, so that
/// what it accepts always seals.
pub fn check_totals(
    sizes: impl IntoIterator<Item = (usize, usize)>,
) -> Result<usize, PayloadError> {
    let (mut count, mut len) = (0usize, COUNT_LEN);
    for (name, value) in sizes {
        count += 1;
        len += ENTRY_FIXED_LEN + name + value;
    }
    if count > MAX_ENTRIES {
        return Err(PayloadError::TooManyEntries { count });
    }
    if len > MAX_PAYLOAD_LEN {
        return Err(PayloadError::TooLarge { len });
    }
    Ok(len)
}

/// Checks each entry on its own (name, no NUL, `NAME=value` size) and that
/// no name repeats; not the count or total size of a bundle.
pub fn validate_each(entries: &[Entry]) -> Result<(), PayloadError> {
    let mut seen = HashSet::with_capacity(entries.len());
    for e in entries {
        let name = e.name.as_bytes();
        validate_name(name)?;
        if !seen.insert(name) {
            return Err(PayloadError::DuplicateName(shown(name)));
        }
        let value = e.value.expose();
        if value.contains(&0) {
            return Err(PayloadError::NulInValue(shown(name)));
        }
        let entry_len = name.len() + 1 + value.len();
        if entry_len > MAX_ENTRY_LEN {
            return Err(PayloadError::EntryTooLarge {
                name: shown(name),
                len: entry_len,
            });
        }
    }
    Ok(())
}

/// Seals `entries` under `key` with the given header and nonce. Callers pass
/// a fresh random nonce; a fixed one is only for test vectors.
///
/// The plaintext is written once, into the output buffer, and encrypted in
/// place there; the buffer is wiped if anything fails before encryption.
pub fn seal(
    key: &SecretKey,
    header: &Header,
    entries: &[Entry],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, BundleError> {
    validate_entries(entries)?;
    check_label(header)?;
    let v2 = header.version >= 2;
    if let (false, Some(e)) = (v2, entries.iter().find(|e| e.delivery != Delivery::Env)) {
        return Err(BundleError::HeaderInvalid(format!(
            "entry {} is delivered as {}, which only a version 2 bundle (from a repository) carries",
            e.name, e.delivery
        )));
    }
    let fixed = if v2 {
        ENTRY_FIXED_LEN
    } else {
        ENTRY_FIXED_LEN_V1
    };
    let payload_len = COUNT_LEN
        + entries
            .iter()
            .map(|e| fixed + e.name.len() + e.value.len())
            .sum::<usize>();
    let header_json =
        serde_json::to_vec(header).map_err(|e| BundleError::HeaderInvalid(e.to_string()))?;
    if !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&header_json.len()) {
        return Err(BundleError::HeaderLength(header_json.len()));
    }

    let total = PREFIX_LEN + header_json.len() + NONCE_LEN + payload_len + TAG_LEN;
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    out.extend_from_slice(MAGIC);
    out.push(header.version);
    out.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_json);
    let aad_end = out.len();
    out.extend_from_slice(nonce);
    let payload_start = out.len();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        let value = e.value.expose();
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        if v2 {
            out.push(e.delivery.byte());
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(0);
    }
    debug_assert_eq!(out.len() - payload_start, payload_len);

    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
    let (aad, rest) = out.split_at_mut(aad_end);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut rest[NONCE_LEN..])
        .map_err(|_| BundleError::TooLarge(total))?;
    drop(cipher);
    out.extend_from_slice(&tag);
    debug_assert_eq!(out.len(), total);
    // Encrypted now: hand the buffer out without copying it.
    Ok(std::mem::take(&mut *out))
}

/// Where the parts of a bundle lie, and its (not yet authenticated) header.
#[derive(Debug, Clone)]
pub struct Layout {
    pub header: Header,
    /// End of the associated data (= start of the nonce).
    pub aad_end: usize,
    /// Length of the ciphertext (= of the plaintext payload).
    pub payload_len: usize,
}

impl Layout {
    fn ciphertext(&self) -> std::ops::Range<usize> {
        let start = self.aad_end + NONCE_LEN;
        start..start + self.payload_len
    }
}

/// Parses the unencrypted part of a bundle. Nothing it returns is
/// authenticated until [`OpenedBundle::open`] succeeds.
pub fn parse(bytes: &[u8]) -> Result<Layout, BundleError> {
    if bytes.is_empty() {
        return Err(BundleError::Empty);
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    if bytes.len() > MAX_BUNDLE_LEN {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    let Some(&version) = bytes.get(8) else {
        return Err(BundleError::Truncated(Region::Prefix));
    };
    match version {
        0 => return Err(BundleError::VersionZero),
        1..=VERSION => {}
        v => return Err(BundleError::NewerVersion(v)),
    }
    let Some(len_bytes) = bytes.get(9..PREFIX_LEN) else {
        return Err(BundleError::Truncated(Region::Prefix));
    };
    let header_len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&header_len) {
        return Err(BundleError::HeaderLength(header_len));
    }
    let aad_end = PREFIX_LEN + header_len;
    let need = |region, end: usize| {
        if bytes.len() < end {
            Err(BundleError::Truncated(region))
        } else {
            Ok(())
        }
    };
    need(Region::Header, aad_end)?;
    need(Region::Nonce, aad_end + NONCE_LEN)?;
    need(Region::Ciphertext, aad_end + NONCE_LEN + COUNT_LEN)?;
    need(Region::Tag, aad_end + NONCE_LEN + COUNT_LEN + TAG_LEN)?;
    let payload_len = bytes.len() - aad_end - NONCE_LEN - TAG_LEN;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(BundleError::Payload(PayloadError::TooLarge {
            len: payload_len,
        }));
    }

    // Unauthenticated bytes: the error says where, never what (serde's own
    // text quotes field names, which a forger chooses).
    let header: Header = serde_json::from_slice(&bytes[PREFIX_LEN..aad_end]).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax => "is not valid JSON",
            serde_json::error::Category::Eof => "is cut short",
            _ => "has an unknown, missing or mistyped member",
        };
        BundleError::HeaderInvalid(format!("{what} (line {}, column {})", e.line(), e.column()))
    })?;
    if header.version != version {
        return Err(BundleError::HeaderInvalid(format!(
            "header version {} differs from the format version {version}",
            header.version
        )));
    }
    check_label(&header)?;
    Ok(Layout {
        header,
        aad_end,
        payload_len,
    })
}

/// Position of one decoded entry inside the decrypted buffer.
#[derive(Debug, Clone, Copy)]
struct EntryPos {
    /// Offset of the name; `name=value\0` follows contiguously.
    start: usize,
    name_len: usize,
    value_len: usize,
    delivery: Delivery,
}

/// A bundle decrypted in place, in the locked buffer it was read into.
/// Dropping it wipes the plaintext.
pub struct OpenedBundle {
    buf: SecretBuf,
    header: Header,
    entries: Vec<EntryPos>,
}

impl OpenedBundle {
    /// Authenticates and decrypts the bundle held in `buf`, in place, then
    /// decodes and validates its payload and checks the expiry against `now`
    /// (Unix seconds; `None` skips the check, for inspection). On error the
    /// buffer is wiped (dropped).
    pub fn open(
        key: &SecretKey,
        mut buf: SecretBuf,
        now: Option<u64>,
    ) -> Result<Self, BundleError> {
        let layout = parse(buf.expose())?;
        let ct = layout.ciphertext();
        {
            let bytes = buf.expose_mut();
            let (head, rest) = bytes.split_at_mut(layout.aad_end);
            let nonce = *XNonce::from_slice(&rest[..NONCE_LEN]);
            let tag = *Tag::from_slice(&rest[NONCE_LEN + layout.payload_len..]);
            let cipher = XChaCha20Poly1305::new(Key::from_slice(key.expose()));
            let payload = &mut rest[NONCE_LEN..NONCE_LEN + layout.payload_len];
            let ok = cipher
                .decrypt_in_place_detached(&nonce, head, payload, &tag)
                .is_ok();
            drop(cipher);
            if !ok {
                return Err(BundleError::DecryptionFailed);
            }
        }
        let v2 = layout.header.version >= 2;
        let entries = decode_payload(&buf.expose()[ct.clone()], ct.start, v2)?;
        let header = layout.header;
        if let (Some(expires), Some(now)) = (header.expires, now) {
            if header.is_expired(now) {
                return Err(BundleError::Expired { expires, now });
            }
        }
        Ok(Self {
            buf,
            header,
            entries,
        })
    }

    /// The header, authenticated.
    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in payload order, borrowed from the decrypted buffer.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = EntryRef<'_>> + '_ {
        let bytes = self.buf.expose();
        self.entries.iter().map(move |p| EntryRef {
            env: &bytes[p.start..p.start + p.name_len + 1 + p.value_len + 1],
            name_len: p.name_len,
            delivery: p.delivery,
        })
    }

    /// Zeroes the entries of `delivery` in the decrypted buffer and forgets
    /// them (they are no longer among [`OpenedBundle::entries`]); how many.
    pub fn wipe(&mut self, delivery: Delivery) -> usize {
        let bytes = self.buf.expose_mut();
        let before = self.entries.len();
        self.entries.retain(|p| {
            if p.delivery != delivery {
                return true;
            }
            let end = p.start + p.name_len + 1 + p.value_len + 1;
            zeroize::Zeroize::zeroize(&mut bytes[p.start..end]);
            false
        });
        before - self.entries.len()
    }
}

impl fmt::Debug for OpenedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedBundle")
            .field("header", &self.header)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// One entry of an opened bundle: `NAME=value\0` in the decrypted buffer.
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    env: &'a [u8],
    name_len: usize,
    delivery: Delivery,
}

impl<'a> EntryRef<'a> {
    pub fn name(&self) -> &'a str {
        std::str::from_utf8(&self.env[..self.name_len]).expect("validated ASCII name")
    }

    /// Where it goes (version 1: always [`Delivery::Env`]).
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The secret value. Never log it.
    pub fn value(&self) -> &'a [u8] {
        &self.env[self.name_len + 1..self.env.len() - 1]
    }

    /// `NAME=value` as a C string, ready for `execve`'s envp, not copied.
    pub fn as_env(&self) -> &'a CStr {
        CStr::from_bytes_with_nul(self.env).expect("validated: one NUL, at the end")
    }
}

impl fmt::Debug for EntryRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EntryRef({}, {} bytes, redacted)",
            self.name(),
            self.value().len()
        )
    }
}

/// Decodes and validates a payload; `base` is its offset in the buffer.
fn decode_payload(p: &[u8], base: usize, v2: bool) -> Result<Vec<EntryPos>, PayloadError> {
    use PayloadError::Structure;
    if p.len() > MAX_PAYLOAD_LEN {
        return Err(PayloadError::TooLarge { len: p.len() });
    }
    let count = u32::from_le_bytes(p[..COUNT_LEN].try_into().expect("4 bytes")) as usize;
    if count > MAX_ENTRIES {
        return Err(PayloadError::TooManyEntries { count });
    }
    // Each entry takes at least ENTRY_FIXED_LEN_V1 + 1 bytes: bound the
    // allocation by what the payload can actually hold.
    let mut entries = Vec::with_capacity(count.min(p.len() / (ENTRY_FIXED_LEN_V1 + 1)));
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(entries.capacity());
    let mut at = COUNT_LEN;
    for _ in 0..count {
        let head = if v2 { 7 } else { 6 };
        let fixed = p
            .get(at..at + head)
            .ok_or(Structure("an entry is cut off"))?;
        let name_len = u16::from_le_bytes([fixed[0], fixed[1]]) as usize;
        let value_len = u32::from_le_bytes(fixed[2..6].try_into().expect("4 bytes")) as usize;
        let delivery = match v2 {
            false => Delivery::Env,
            true => {
                Delivery::from_byte(fixed[6]).ok_or(Structure("an entry's delivery is unknown"))?
            }
        };
        let start = at + head;
        let eq = start + name_len;
        let nul = eq + 1 + value_len;
        if nul >= p.len() {
            return Err(Structure("an entry is cut off"));
        }
        let name = &p[start..eq];
        validate_name(name)?;
        if p[eq] != b'=' {
            return Err(Structure("an entry lacks its '=' separator"));
        }
        if p[nul] != 0 {
            return Err(Structure("an entry lacks its terminating NUL"));
        }
        if p[eq + 1..nul].contains(&0) {
            return Err(PayloadError::NulInValue(shown(name)));
        }
        if name_len + 1 + value_len > MAX_ENTRY_LEN {
            return Err(PayloadError::EntryTooLarge {
                name: shown(name),
                len: name_len + 1 + value_len,
            });
        }
        if !seen.insert(name) {
            return Err(PayloadError::DuplicateName(shown(name)));
        }
        entries.push(EntryPos {
            start: base + start,
            name_len,
            value_len,
            delivery,
        });
        at = nul + 1;
    }
    if at != p.len() {
        return Err(Structure("bytes follow the last entry"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes_for_tests(&[b; 32]).unwrap()
    }

    fn entry(name: &str, value: &[u8]) -> Entry {
        Entry::env(name, SecretValue::from(value.to_vec()))
    }

    fn buf(bytes: &[u8]) -> SecretBuf {
        let mut b = SecretBuf::zeroed(bytes.len()).unwrap();
        b.expose_mut().copy_from_slice(bytes);
        b
    }

    fn open(k: &SecretKey, bytes: &[u8], now: u64) -> Result<OpenedBundle, BundleError> {
        OpenedBundle::open(k, buf(bytes), Some(now))
    }

    fn sample() -> Vec<u8> {
        let header = Header::new(1_700_000_000, None, Some("acme/api".into()));
        let entries = [entry("A", b"alpha"), entry("MULTI", b"x\ny=z")];
        seal(&key(1), &header, &entries, &NONCE).unwrap()
    }

    /// Seals an arbitrary payload, bypassing validation, so that the reader
    /// can be shown to reject authenticated but malformed payloads.
    fn seal_raw(payload: &[u8]) -> Vec<u8> {
        let header = serde_json::to_vec(&Header::new(1, None, None)).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(1);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        let aad_end = out.len();
        out.extend_from_slice(&NONCE);
        out.extend_from_slice(payload);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(key(1).expose()));
        let (aad, rest) = out.split_at_mut(aad_end);
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&NONCE), aad, &mut rest[NONCE_LEN..])
            .unwrap();
        out.extend_from_slice(&tag);
        out
    }

    fn raw_entry(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&(name.len() as u16).to_le_bytes());
        e.extend_from_slice(&(value.len() as u32).to_le_bytes());
        e.extend_from_slice(name);
        e.push(b'=');
        e.extend_from_slice(value);
        e.push(0);
        e
    }

    fn payload(count: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut p = count.to_le_bytes().to_vec();
        entries.iter().for_each(|e| p.extend_from_slice(e));
        p
    }

    #[test]
    fn opens_what_it_seals() {
        let b = sample();
        let o = open(&key(1), &b, 0).unwrap();
        assert_eq!(o.header().label.as_deref(), Some("acme/api"));
        let got: Vec<_> = o.entries().map(|e| (e.name(), e.value())).collect();
        assert_eq!(got, [("A", &b"alpha"[..]), ("MULTI", &b"x\ny=z"[..])]);
        let envs: Vec<_> = o.entries().map(|e| e.as_env().to_bytes()).collect();
        assert_eq!(envs, [&b"A=alpha"[..], &b"MULTI=x\ny=z"[..]]);
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let b = sample();
        let aad_end = parse(&b).unwrap().aad_end;
        for i in 0..b.len() {
            for bit in [0x01, 0x80] {
                let mut t = b.clone();
                t[i] ^= bit;
                let err = open(&key(1), &t, 0).expect_err(&format!("byte {i} bit {bit:#x}"));
                if i >= aad_end {
                    // nonce, ciphertext, tag: only the AEAD can notice.
                    assert_eq!(err, BundleError::DecryptionFailed, "byte {i}");
                }
            }
        }
    }

    #[test]
    fn header_changes_that_still_parse_fail_authentication() {
        let b = sample();
        let text = String::from_utf8_lossy(&b[PREFIX_LEN..parse(&b).unwrap().aad_end]).into_owned();
        let forged = text.replace("acme/api", "acme/apj");
        assert_eq!(forged.len(), text.len());
        let mut t = b.clone();
        t[PREFIX_LEN..PREFIX_LEN + forged.len()].copy_from_slice(forged.as_bytes());
        assert_eq!(parse(&t).unwrap().header.label.as_deref(), Some("acme/apj"));
        assert_eq!(
            open(&key(1), &t, 0).unwrap_err(),
            BundleError::DecryptionFailed
        );
    }

    #[test]
    fn wrong_key_is_rejected() {
        assert_eq!(
            open(&key(2), &sample(), 0).unwrap_err(),
            BundleError::DecryptionFailed
        );
    }

    #[test]
    fn every_truncation_is_rejected_and_named() {
        let b = sample();
        let aad_end = parse(&b).unwrap().aad_end;
        assert_eq!(open(&key(1), &[], 0).unwrap_err(), BundleError::Empty);
        for len in 1..b.len() {
            let err = open(&key(1), &b[..len], 0).unwrap_err();
            let want = match len {
                n if n < MAGIC.len() => BundleError::NotABundle,
                n if n < PREFIX_LEN => BundleError::Truncated(Region::Prefix),
                n if n < aad_end => BundleError::Truncated(Region::Header),
                n if n < aad_end + NONCE_LEN => BundleError::Truncated(Region::Nonce),
                n if n < aad_end + NONCE_LEN + COUNT_LEN => {
                    BundleError::Truncated(Region::Ciphertext)
                }
                n if n < aad_end + NONCE_LEN + COUNT_LEN + TAG_LEN => {
                    BundleError::Truncated(Region::Tag)
                }
                _ => BundleError::DecryptionFailed,
            };
            assert_eq!(err, want, "length {len}");
        }
    }

    #[test]
    fn format_errors_are_told_apart() {
        let mut b = sample();
        b[8] = VERSION + 1;
        assert_eq!(
            parse(&b).unwrap_err(),
            BundleError::NewerVersion(VERSION + 1)
        );
        b[8] = 0;
        assert_eq!(parse(&b).unwrap_err(), BundleError::VersionZero);
        assert_eq!(
            parse(b"PK\x03\x04 zip").unwrap_err(),
            BundleError::NotABundle
        );
        let mut b = sample();
        b[9..13].copy_from_slice(&(MAX_HEADER_LEN as u32 + 1).to_le_bytes());
        assert_eq!(
            parse(&b).unwrap_err(),
            BundleError::HeaderLength(MAX_HEADER_LEN + 1)
        );
        let mut b = sample();
        b[PREFIX_LEN] = b'[';
        assert!(matches!(parse(&b), Err(BundleError::HeaderInvalid(_))));
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_before_decryption() {
        let json = r#"{"version":1,"created":5}"#;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.push(1);
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(json.as_bytes());
        bytes.resize(bytes.len() + NONCE_LEN + MAX_PAYLOAD_LEN + 1 + TAG_LEN, 0);
        assert!(bytes.len() <= MAX_BUNDLE_LEN);
        assert!(matches!(
            parse(&bytes),
            Err(BundleError::Payload(PayloadError::TooLarge { len })) if len == MAX_PAYLOAD_LEN + 1
        ));
    }

    #[test]
    fn header_rejects_unknown_members_and_version_mismatch() {
        let mut bytes = Vec::new();
        let mk = |json: &str, bytes: &mut Vec<u8>| {
            bytes.clear();
            bytes.extend_from_slice(MAGIC);
            bytes.push(json.as_bytes()[11] - b'0');
            bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
            bytes.extend_from_slice(json.as_bytes());
            bytes.extend_from_slice(&[0; NONCE_LEN + COUNT_LEN + TAG_LEN]);
        };
        mk(r#"{"version":1,"created":5,"only_on":"x"}"#, &mut bytes);
        let err = parse(&bytes).unwrap_err().to_string();
        // Unauthenticated: the error says where, never the forger's text.
        assert!(err.contains("unknown, missing or mistyped member"), "{err}");
        assert!(!err.contains("only_on"), "{err}");
        mk(r#"{"version":2,"created":5}"#, &mut bytes);
        assert!(
            parse(&bytes)
                .unwrap_err()
                .to_string()
                .contains("names its repository")
        );
        mk(r#"{"version":1,"created":5,"repo":"acme/api"}"#, &mut bytes);
        assert!(
            parse(&bytes)
                .unwrap_err()
                .to_string()
                .contains("names no repository")
        );
        mk(r#"{"version":2,"created":5,"repo":"acme/api"}"#, &mut bytes);
        assert_eq!(
            parse(&bytes).unwrap().header.repo.as_deref(),
            Some("acme/api")
        );
        mk(r#"{"version":2,"created":5,"repo":"acme/api"}"#, &mut bytes);
        bytes[8] = 1;
        assert!(parse(&bytes).unwrap_err().to_string().contains("differs"));
        mk(
            r#"{"version":1,"created":5,"expires":null,"label":null}"#,
            &mut bytes,
        );
        assert!(parse(&bytes).is_ok());
    }

    #[test]
    fn expiry_is_checked_after_authentication() {
        let header = Header::new(100, Some(200), None);
        let b = seal(&key(1), &header, &[], &NONCE).unwrap();
        assert!(open(&key(1), &b, 199).is_ok());
        assert_eq!(
            open(&key(1), &b, 200).unwrap_err(),
            BundleError::Expired {
                expires: 200,
                now: 200
            }
        );
        // A wrong key reports authentication, not expiry.
        assert_eq!(
            open(&key(9), &b, 500).unwrap_err(),
            BundleError::DecryptionFailed
        );
        assert!(OpenedBundle::open(&key(1), buf(&b), None).is_ok());
    }

    #[test]
    fn sealing_validates_entries() {
        let v = |entries: &[Entry]| validate_entries(entries).unwrap_err();
        assert!(matches!(
            v(&[entry("1A", b"")]),
            PayloadError::InvalidName(_)
        ));
        assert!(matches!(
            v(&[entry("A-B", b"")]),
            PayloadError::InvalidName(_)
        ));
        assert!(matches!(v(&[entry("", b"")]), PayloadError::InvalidName(_)));
        assert!(matches!(
            v(&[entry("É", b"")]),
            PayloadError::InvalidName(_)
        ));
        assert!(matches!(
            v(&[entry("SEALINIT_BUNDLE", b"")]),
            PayloadError::ReservedName(_)
        ));
        assert!(matches!(
            v(&[entry("A", b"x\0y")]),
            PayloadError::NulInValue(_)
        ));
        assert_eq!(
            v(&[entry("A", b"1"), entry("B", b""), entry("A", b"2")]),
            PayloadError::DuplicateName("\"A\"".into())
        );
        // NAME=value may be 131,071 bytes, not one more.
        let big = vec![b'v'; MAX_ENTRY_LEN - 2];
        assert!(validate_entries(&[entry("A", &big)]).is_ok());
        let bigger = vec![b'v'; MAX_ENTRY_LEN - 1];
        assert!(matches!(
            v(&[entry("A", &bigger)]),
            PayloadError::EntryTooLarge { len: 131_072, .. }
        ));
        let many: Vec<_> = (0..=MAX_ENTRIES)
            .map(|i| entry(&format!("N{i}"), b""))
            .collect();
        assert!(matches!(
            v(&many),
            PayloadError::TooManyEntries { count: 10_001 }
        ));
        let heavy: Vec<_> = ["A", "B", "C", "D", "E", "F", "G", "H", "I"]
            .iter()
            .map(|n| entry(n, &big))
            .collect();
        assert!(matches!(v(&heavy), PayloadError::TooLarge { .. }));
        let most: Vec<_> = (0..MAX_ENTRIES)
            .map(|i| entry(&format!("N{i}"), b""))
            .collect();
        assert!(seal(&key(1), &Header::new(0, None, None), &most, &NONCE).is_ok());
    }

    #[test]
    fn authenticated_but_malformed_payloads_are_rejected() {
        let open_raw = |p: &[u8]| open(&key(1), &seal_raw(p), 0).unwrap_err();
        let good = raw_entry(b"A", b"v");
        assert!(
            open(
                &key(1),
                &seal_raw(&payload(1, std::slice::from_ref(&good))),
                0
            )
            .is_ok()
        );
        assert!(matches!(
            open_raw(&payload(2, std::slice::from_ref(&good))),
            BundleError::Payload(PayloadError::Structure(_))
        ));
        let mut trailing = payload(1, std::slice::from_ref(&good));
        trailing.push(0);
        assert!(matches!(
            open_raw(&trailing),
            BundleError::Payload(PayloadError::Structure(_))
        ));
        let mut no_eq = good.clone();
        no_eq[7] = b':';
        assert!(matches!(
            open_raw(&payload(1, &[no_eq])),
            BundleError::Payload(PayloadError::Structure(_))
        ));
        let mut no_nul = good.clone();
        *no_nul.last_mut().unwrap() = b'x';
        assert!(matches!(
            open_raw(&payload(1, &[no_nul])),
            BundleError::Payload(PayloadError::Structure(_))
        ));
        assert!(matches!(
            open_raw(&payload(1, &[raw_entry(b"A", b"x\0y")])),
            BundleError::Payload(PayloadError::NulInValue(_))
        ));
        assert!(matches!(
            open_raw(&payload(2, &[good.clone(), good.clone()])),
            BundleError::Payload(PayloadError::DuplicateName(_))
        ));
        assert!(matches!(
            open_raw(&payload(1, &[raw_entry(b"9X", b"")])),
            BundleError::Payload(PayloadError::InvalidName(_))
        ));
        assert!(matches!(
            open_raw(&payload(1, &[raw_entry(b"SEALINIT_X", b"")])),
            BundleError::Payload(PayloadError::ReservedName(_))
        ));
        assert!(matches!(
            open_raw(&payload(10_001, &[])),
            BundleError::Payload(PayloadError::TooManyEntries { .. })
        ));
        // A huge value_len must not be trusted for arithmetic or allocation.
        let mut lying = good;
        lying[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            open_raw(&payload(1, &[lying])),
            BundleError::Payload(PayloadError::Structure(_))
        ));
    }

    #[test]
    fn debug_output_redacts_values() {
        let b = sample();
        let o = open(&key(1), &b, 0).unwrap();
        let shown = format!(
            "{:?} {:?} {:?} {:?} {:?}",
            o,
            o.entries().collect::<Vec<_>>(),
            key(1),
            entry("A", b"alpha"),
            buf(b"alpha")
        );
        assert!(!shown.contains("alpha"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("[1, 1, 1"), "{shown}");
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,24}".prop_filter("reserved", |n| !n.starts_with(RESERVED_PREFIX))
    }

    proptest! {
        #[test]
        fn round_trip(
            pairs in proptest::collection::btree_map(
                name_strategy(),
                proptest::collection::vec(1u8..=255, 0..300),
                0..40,
            ),
            label in proptest::option::of(".{0,40}"),
            nonce in proptest::array::uniform24(any::<u8>()),
            k in proptest::array::uniform32(any::<u8>()),
        ) {
            let key = SecretKey::from_bytes_for_tests(&k).unwrap();
            let entries: Vec<_> = pairs.iter().map(|(n, v)| entry(n, v)).collect();
            let header = Header::new(42, Some(u64::MAX), label);
            let sealed = seal(&key, &header, &entries, &nonce).unwrap();
            let opened = OpenedBundle::open(&key, buf(&sealed), Some(43)).unwrap();
            prop_assert_eq!(opened.header(), &header);
            let got: Vec<_> = opened.entries().map(|e| (e.name().to_owned(), e.value().to_vec())).collect();
            let want: Vec<_> = pairs.into_iter().collect();
            prop_assert_eq!(got, want);
        }
    }
}
