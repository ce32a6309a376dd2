//! Masking secret values in the command's output (`--mask`). Pure: no I/O.
//!
//! What is recognised, for each value of at least `min_len` bytes: the value;
//! each line of a multi-line value; its base64 encoding at the three byte
//! alignments (the characters that depend only on the value, as GitHub
//! Actions does); its URL-encoded (RFC 3986) and JSON-escaped forms. They go
//! into Aho-Corasick automata built once (see [`Masker`]); leftmost-longest
//! matches of the union are replaced.
//!
//! Streaming: [`Masker::feed`] emits everything that can no longer be part
//! of a match and holds back only the shortest tail that is still a prefix
//! of some pattern (or a match that a longer pattern could extend); the
//! caller flushes that tail after a silence or at the end.

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, Input, Match, MatchKind};
use zeroize::{Zeroize, Zeroizing};

/// A built matcher. It embeds the patterns (the values and their encodings):
/// see the README on what stays in memory with `--mask`.
///
/// Two contiguous Aho-Corasick NFAs (about 2.5 MB together for 1,000
/// secrets and their forms, where a DFA takes 50 MB): one for the values
/// and their plain forms, searched everywhere; one for the base64 forms,
/// searched only inside runs of base64 characters at least as long as the
/// shortest of them, which in text are rare. Together they give the
/// leftmost-longest match of the union.
pub struct Masker {
    plain: Option<NFA>,
    /// The first four bytes of every plain pattern, hashed into a bitmap:
    /// the search runs the automaton only where a pattern may start.
    /// `None` if a pattern is shorter than four bytes.
    starts: Option<Box<[u64]>>,
    base64: Option<NFA>,
    base64_min: usize,
    replacement: Vec<u8>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |n: &Option<NFA>| n.as_ref().map_or(0, |n| n.patterns_len());
        f.debug_struct("Masker")
            .field("patterns", &(count(&self.plain) + count(&self.base64)))
            .finish_non_exhaustive()
    }
}

const fn base64_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
        b += 1;
    }
    t
}

static IS_BASE64: [bool; 256] = base64_table();

/// Size of the pattern-start bitmap: 2^18 bits, 32 KiB (fits L1).
const START_BITS: usize = 1 << 18;

fn start_hash(four: &[u8]) -> usize {
    let x = u32::from_le_bytes(four.try_into().expect("4 bytes"));
    (x.wrapping_mul(0x9E37_79B1) >> 14) as usize
}

/// Builds one automaton; the patterns (each wiped on drop) are consumed.
fn build(mut patterns: Vec<Pattern>) -> Option<NFA> {
    patterns.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
    patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
    (!patterns.is_empty()).then(|| {
        aho_corasick::nfa::contiguous::Builder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|p| p.as_slice()))
            .expect("patterns are non-empty byte strings")
    })
}

/// Whether `tail` may still grow into a match of `nfa` (or into a longer
/// one): stepping the anchored automaton through it never dies, and, if it
/// ends on a match, some byte could extend it.
fn undecided(nfa: &NFA, tail: &[u8]) -> bool {
    let Ok(mut sid) = nfa.start_state(Anchored::Yes) else {
        return false;
    };
    for &b in tail {
        sid = nfa.next_state(Anchored::Yes, sid, b);
        if nfa.is_dead(sid) {
            return false;
        }
    }
    if !nfa.is_match(sid) {
        return true;
    }
    (0..=255u8).any(|b| !nfa.is_dead(nfa.next_state(Anchored::Yes, sid, b)))
}

/// The leftmost undecided position among `from..buf.len()`.
fn hold_point(nfa: &NFA, buf: &[u8], from: usize) -> usize {
    let from = from.max(buf.len().saturating_sub(nfa.max_pattern_len()));
    (from..buf.len())
        .find(|&p| undecided(nfa, &buf[p..]))
        .unwrap_or(buf.len())
}

impl Masker {
    /// Builds the matcher for `values`; values shorter than `min_len` are
    /// not masked (their indices are returned, for a warning by name).
    pub fn new<'a>(
        values: impl IntoIterator<Item = &'a [u8]>,
        min_len: usize,
        replacement: &[u8],
    ) -> (Self, Vec<usize>) {
        let min_len = min_len.max(1);
        let (mut plain, mut base64) = (Vec::new(), Vec::new());
        let mut skipped = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            if v.len() < min_len {
                skipped.push(i);
                continue;
            }
            variants(v, min_len, &mut plain, &mut base64);
        }
        let base64_min = base64.iter().map(|p| p.len()).min().unwrap_or(usize::MAX);
        let mut starts = plain.iter().all(|p| p.len() >= 4).then(|| {
            let mut bits = vec![0u64; START_BITS / 64].into_boxed_slice();
            for p in &plain {
                let h = start_hash(&p[..4]);
                bits[h / 64] |= 1 << (h % 64);
            }
            bits
        });
        let plain_nfa = build(plain);
        if plain_nfa.as_ref().is_some_and(|n| n.prefilter().is_some()) {
            // aho-corasick found a prefilter of its own (e.g. the values
            // share rare bytes): its SIMD scan beats the bitmap.
            starts = None;
        }
        (
            Self {
                starts,
                plain: plain_nfa,
                base64: build(base64),
                base64_min,
                replacement: replacement.to_vec(),
            },
            skipped,
        )
    }

    /// Masks a complete buffer at once.
    pub fn mask_all(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut s = Stream::default();
        self.feed(&mut s, data, &mut out);
        self.finish(&mut s, &mut out);
        out
    }

    /// Takes new output of stream `s`; appends to `out` what is decided.
    pub fn feed(&self, s: &mut Stream, data: &[u8], out: &mut Vec<u8>) {
        if s.pending.is_empty() {
            let used = self.process(data, out, false);
            extend_wiping(&mut s.pending, &data[used..]);
        } else {
            extend_wiping(&mut s.pending, data);
            let used = self.process(&s.pending, out, false);
            consume_wiping(&mut s.pending, used);
        }
    }

    /// Emits the held tail of `s` (after a silence, or at the end of the
    /// stream), masking what is complete in it.
    pub fn finish(&self, s: &mut Stream, out: &mut Vec<u8>) {
        self.process(&s.pending, out, true);
        s.pending.zeroize();
    }

    /// The leftmost-longest plain-form match at or after `from`.
    fn next_plain(&self, nfa: &NFA, buf: &[u8], from: usize) -> Option<Match> {
        let Some(bits) = &self.starts else {
            return nfa
                .try_find(&Input::new(buf).span(from..buf.len()))
                .expect("unanchored search");
        };
        // Every pattern is at least 4 bytes long: a match starts at a
        // position whose next 4 bytes are some pattern's first 4. The first
        // such position with an anchored match holds the leftmost match.
        for (i, w) in buf[from..].windows(4).enumerate() {
            let h = start_hash(w);
            if bits[h / 64] & (1 << (h % 64)) != 0 {
                let p = from + i;
                let input = Input::new(buf).span(p..buf.len()).anchored(Anchored::Yes);
                if let Some(m) = nfa.try_find(&input).expect("anchored search") {
                    return Some(m);
                }
            }
        }
        None
    }

    /// The leftmost-longest base64-form match at or after `from`: only in
    /// runs of base64 characters long enough to hold one.
    fn next_base64(&self, nfa: &NFA, buf: &[u8], from: usize) -> Option<Match> {
        let mut i = from;
        while i < buf.len() {
            // Skip to the next base64 character, then to the end of its run.
            while i < buf.len() && !IS_BASE64[buf[i] as usize] {
                i += 1;
            }
            let start = i;
            while i < buf.len() && IS_BASE64[buf[i] as usize] {
                i += 1;
            }
            if i - start >= self.base64_min {
                let input = Input::new(buf).span(start..i);
                if let Some(m) = nfa.try_find(&input).expect("unanchored search") {
                    return Some(m);
                }
            }
        }
        None
    }

    /// Masks `buf`, appending to `out`; returns how many bytes of `buf`
    /// were consumed (the rest is an undecided tail, unless `last`).
    fn process(&self, buf: &[u8], out: &mut Vec<u8>, last: bool) -> usize {
        if self.plain.is_none() && self.base64.is_none() {
            out.extend_from_slice(buf);
            return buf.len();
        }
        // The hold point: the leftmost position whose suffix is undecided,
        // for either automaton (base64 forms only within the final run).
        let hold = if last {
            buf.len()
        } else {
            let plain = self
                .plain
                .as_ref()
                .map_or(buf.len(), |n| hold_point(n, buf, 0));
            let run = buf
                .iter()
                .rposition(|&b| !IS_BASE64[b as usize])
                .map_or(0, |p| p + 1);
            let base64 = self
                .base64
                .as_ref()
                .map_or(buf.len(), |n| hold_point(n, buf, run));
            plain.min(base64)
        };
        let mut at = 0;
        // The next match of each kind, kept while it lies ahead.
        let mut ahead: Option<Option<Match>> = None;
        let mut ahead_plain: Option<Option<Match>> = None;
        while at < hold {
            let plain = match (&self.plain, ahead_plain) {
                (None, _) => None,
                (Some(_), Some(m)) if m.is_none_or(|m| m.start() >= at) => m,
                (Some(n), _) => self.next_plain(n, buf, at),
            };
            ahead_plain = Some(plain);
            let base64 = match (&self.base64, ahead) {
                (None, _) => None,
                (Some(_), Some(m)) if m.is_none_or(|m| m.start() >= at) => m,
                (Some(n), _) => self.next_base64(n, buf, at),
            };
            ahead = Some(base64);
            let first = match (plain, base64) {
                (Some(p), Some(b))
                    if (b.start(), std::cmp::Reverse(b.end()))
                        < (p.start(), std::cmp::Reverse(p.end())) =>
                {
                    Some(b)
                }
                (Some(p), _) => Some(p),
                (None, b) => b,
            };
            match first {
                Some(m) if m.start() < hold => {
                    out.extend_from_slice(&buf[at..m.start()]);
                    out.extend_from_slice(&self.replacement);
                    at = m.end();
                }
                _ => {
                    out.extend_from_slice(&buf[at..hold]);
                    at = hold;
                }
            }
        }
        at
    }
}

/// The state of one output stream: the undecided tail, held back.
#[derive(Default)]
pub struct Stream {
    pending: Vec<u8>,
}

impl Stream {
    /// Whether bytes are held back, waiting for more.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({} bytes held, redacted)", self.pending.len())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.pending.zeroize();
    }
}

/// A pattern: a copy of a value or of one of its forms, wiped on drop.
type Pattern = Zeroizing<Vec<u8>>;

/// The forms of `v` that are masked: plain ones, and base64 ones. A
/// multi-line value is also searched as a terminal shows it (`\r\n` for
/// each `\n`, what a pty's ONLCR makes of it), whole and line by line.
fn variants(v: &[u8], min_len: usize, plain: &mut Vec<Pattern>, base64: &mut Vec<Pattern>) {
    plain.push(Zeroizing::new(v.to_vec()));
    if v.contains(&b'\n') {
        let mut crlf = Zeroizing::new(Vec::with_capacity(v.len() * 2));
        for &b in v {
            if b == b'\n' && crlf.last() != Some(&b'\r') {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        if *crlf != v {
            plain.push(crlf);
        }
        for line in v.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= min_len {
                plain.push(Zeroizing::new(line.to_vec()));
            }
        }
    }
    for shift in 0..3 {
        let b64 = base64_core(v, shift);
        if b64.len() >= min_len {
            base64.push(b64);
        }
    }
    let url = url_encode(v);
    if *url != v {
        plain.push(url);
    }
    if let Ok(text) = std::str::from_utf8(v) {
        let json = Zeroizing::new(serde_json::to_string(text).expect("a str serialises"));
        let inner = &json.as_bytes()[1..json.len() - 1];
        if inner != v {
            plain.push(Zeroizing::new(inner.to_vec()));
        }
    }
}

/// Every form of `v` that a [`Masker`] recognises (the value; each line of
/// a multi-line value; its base64 at the three alignments; its URL- and
/// JSON-encoded forms), each wiped when dropped: for a matcher of one's
/// own (the egress proxy's leak check).
pub fn forms(v: &[u8], min_len: usize) -> Vec<Zeroizing<Vec<u8>>> {
    let (mut plain, mut base64) = (Vec::new(), Vec::new());
    variants(v, min_len.max(1), &mut plain, &mut base64);
    plain.extend(base64);
    plain
}

/// The base64 characters of `v` placed `shift` bytes into a stream, that
/// depend on `v`'s bits only.
fn base64_core(v: &[u8], shift: usize) -> Pattern {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Zeroizing::new(Vec::with_capacity(shift + v.len()));
    bytes.resize(shift, 0);
    bytes.extend_from_slice(v);
    let mut chars = Zeroizing::new(Vec::with_capacity(bytes.len() * 4 / 3 + 4));
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            chars.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    // Characters fully inside the value: from bit 8*shift to bit 8*(shift+len).
    let first = (8 * shift).div_ceil(6);
    let last = 8 * (shift + v.len()) / 6;
    Zeroizing::new(chars[first.min(last)..last].to_vec())
}

/// Percent-encoding of everything but RFC 3986 unreserved characters.
fn url_encode(v: &[u8]) -> Pattern {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 3));
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out
}

/// Appends `data` to `v`; a growth moves the bytes to a new allocation and
/// wipes the old one (a plain `Vec` growth would free it as it is).
fn extend_wiping(v: &mut Vec<u8>, data: &[u8]) {
    if v.capacity() - v.len() < data.len() {
        let mut bigger = Vec::with_capacity((v.len() + data.len()).max(2 * v.capacity()));
        bigger.extend_from_slice(v);
        v.zeroize();
        *v = bigger;
    }
    v.extend_from_slice(data);
}

/// Removes the first `n` bytes of `v`, wiping the bytes left behind in
/// its spare capacity by the shift.
fn consume_wiping(v: &mut Vec<u8>, n: usize) {
    let len = v.len();
    v.copy_within(n.., 0);
    v[len - n..].zeroize();
    v.truncate(len - n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(values: &[&str]) -> Masker {
        Masker::new(values.iter().map(|v| v.as_bytes()), 4, b"***").0
    }

    fn masked(m: &Masker, s: &str) -> String {
        String::from_utf8(m.mask_all(s.as_bytes())).unwrap()
    }

    #[test]
    fn values_and_their_forms_are_masked() {
        let m = masker(&["s3cr3t-token", "line one\nline two", "a b&c/d"]);
        assert_eq!(masked(&m, "x s3cr3t-token y"), "x *** y");
        assert_eq!(masked(&m, "got line two!"), "got ***!");
        assert_eq!(masked(&m, "url=a%20b%26c%2Fd"), "url=***");
        assert_eq!(
            masked(&m, r#"{"v":"line one\nline two"}"#),
            r#"{"v":"***"}"#
        );
        // base64 at all three alignments, as it appears inside longer data.
        for prefix in ["", "x", "xy"] {
            let text = format!("{prefix}s3cr3t-token!!");
            let b64 = base64_std(text.as_bytes());
            let out = masked(&m, &b64);
            assert!(out.contains("***"), "{prefix:?}: {b64} -> {out}");
        }
    }

    #[test]
    fn forms_are_what_is_masked() {
        let forms = forms(b"a b&c/d-secret", 4);
        let m = masker(&["a b&c/d-secret"]);
        for f in &forms {
            assert_ne!(
                m.mask_all(f),
                f.as_slice(),
                "{:?}",
                String::from_utf8_lossy(f)
            );
        }
        assert!(
            forms
                .iter()
                .any(|f| f.as_slice() == b"a%20b%26c%2Fd-secret")
        );
    }

    fn base64_std(v: &[u8]) -> String {
        let mut s = String::from_utf8(base64_core(v, 0).to_vec()).unwrap();
        // pad to full quanta as an encoder would (tail chars are irrelevant here)
        while s.len() % 4 != 0 {
            s.push('=');
        }
        s
    }

    #[test]
    fn short_values_are_skipped_and_reported() {
        let (m, skipped) = Masker::new([&b"abc"[..], b"abcd"], 4, b"***");
        assert_eq!(skipped, [0]);
        assert_eq!(m.mask_all(b"abc abcd"), b"abc ***");
    }

    #[test]
    fn a_value_split_at_every_byte_is_still_masked() {
        let m = masker(&["hunter2-secret"]);
        let text = b"before hunter2-secret after";
        for cut in 0..=text.len() {
            let mut s = Stream::default();
            let mut out = Vec::new();
            m.feed(&mut s, &text[..cut], &mut out);
            m.feed(&mut s, &text[cut..], &mut out);
            m.finish(&mut s, &mut out);
            assert_eq!(out, b"before *** after", "cut at {cut}");
        }
    }

    #[test]
    fn only_an_undecided_tail_is_held() {
        let m = masker(&["hunter2-secret"]);
        let mut s = Stream::default();
        let mut out = Vec::new();
        m.feed(&mut s, b"progress 50%\r", &mut out);
        assert_eq!(
            out, b"progress 50%\r",
            "nothing held without a possible prefix"
        );
        m.feed(&mut s, b"hunt", &mut out);
        assert_eq!(out, b"progress 50%\r", "a prefix is held");
        assert!(s.has_pending());
        m.feed(&mut s, b"ing", &mut out);
        assert_eq!(
            out, b"progress 50%\rhunting",
            "released once it cannot match"
        );
        m.feed(&mut s, b"xhunt", &mut out);
        m.finish(&mut s, &mut out);
        assert_eq!(
            out, b"progress 50%\rhuntingxhunt",
            "a flush emits the held prefix"
        );
    }

    #[test]
    fn prefixes_and_overlaps_take_the_longest() {
        let m = masker(&["abcd", "abcdefgh", "cdefxyz"]);
        assert_eq!(masked(&m, "abcdefgh"), "***");
        assert_eq!(masked(&m, "abcdefg"), "***efg");
        assert_eq!(masked(&m, "abcdefxyz"), "***efxyz");
        assert_eq!(masked(&m, "xxcdefxyz"), "xx***");
        // A complete short match is held while a longer one may follow.
        let mut s = Stream::default();
        let mut out = Vec::new();
        m.feed(&mut s, b"abcd", &mut out);
        assert!(out.is_empty());
        m.feed(&mut s, b"efgh", &mut out);
        assert_eq!(out, b"***");
    }

    #[test]
    fn binary_passes_through_apart_from_masking() {
        let m = masker(&["\u{1}\u{2}secret\u{ff}"]);
        let mut data: Vec<u8> = (0..=255u8).collect();
        data.extend_from_slice("\u{1}\u{2}secret\u{ff}".as_bytes());
        data.extend(0..=255u8);
        let out = m.mask_all(&data);
        let mut want: Vec<u8> = (0..=255u8).collect();
        want.extend_from_slice(b"***");
        want.extend(0..=255u8);
        assert_eq!(out, want);
    }

    /// Feeds `data` to a fresh stream of `m`, split at `cuts`.
    fn streamed(m: &Masker, data: &[u8], cuts: Vec<usize>) -> Vec<u8> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort();
        let mut s = Stream::default();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            m.feed(&mut s, &data[at..c], &mut out);
            at = c;
        }
        m.finish(&mut s, &mut out);
        out
    }

    /// One leftmost-longest replacement of all forms of `values` with `#`.
    fn union_reference(values: &[String], data: &[u8]) -> Vec<u8> {
        let (mut plain, mut b64) = (Vec::new(), Vec::new());
        for v in values {
            variants(v.as_bytes(), 4, &mut plain, &mut b64);
        }
        plain.extend(b64);
        aho_corasick::AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&plain)
            .unwrap()
            .replace_all_bytes(data, &vec![&b"#"[..]; plain.len()])
    }

    proptest::proptest! {
        /// Whatever the values (over a small alphabet, so that they overlap
        /// and prefix each other), the data (with the values and their
        /// base64 forms in it) and where it is split into writes: no value
        /// survives, and the output is exactly that of one leftmost-longest
        /// replacement over all the patterns at once.
        #[test]
        fn streaming_equals_one_union_replacement(
            values in proptest::collection::vec("[ab]{4,9}", 1..6),
            noise in proptest::collection::vec("[abc ]{0,12}", 1..8),
            encode in proptest::collection::vec(0usize..4, 1..8),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let m = Masker::new(values.iter().map(|v| v.as_bytes()), 4, b"#").0;
            let mut data = Vec::new();
            for (i, n) in noise.iter().enumerate() {
                data.extend_from_slice(n.as_bytes());
                let v = values[i % values.len()].as_bytes();
                match encode[i % encode.len()] {
                    0 => data.extend_from_slice(v),
                    shift => {
                        data.extend(std::iter::repeat_n(b'z', shift - 1));
                        data.extend_from_slice(&base64_core(v, shift - 1));
                    }
                }
            }
            let out = streamed(&m, &data, cuts);
            for v in &values {
                proptest::prop_assert!(!out.windows(v.len()).any(|w| w == v.as_bytes()), "{v} in {:?}", String::from_utf8_lossy(&out));
            }
            let reference = union_reference(&values, &data);
            proptest::prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&reference));
        }
    }

    proptest::proptest! {
        /// Many values over a wide alphabet (where aho-corasick often finds
        /// no prefilter, so the start bitmap is used), split anywhere: the
        /// same as one union replacement.
        #[test]
        fn wide_alphabet_values_use_the_start_bitmap(
            values in proptest::collection::vec("[A-Za-z0-9_]{6,14}", 40..80),
            picks in proptest::collection::vec((0usize..80, "[ a-z.]{0,6}"), 1..30),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let m = Masker::new(values.iter().map(|v| v.as_bytes()), 4, b"#").0;
            let mut data = Vec::new();
            for (i, noise) in &picks {
                data.extend_from_slice(noise.as_bytes());
                data.extend_from_slice(values[i % values.len()].as_bytes());
            }
            let out = streamed(&m, &data, cuts);
            let reference = union_reference(&values, &data);
            proptest::prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&reference));
        }
    }

    #[test]
    fn no_values_means_a_plain_copy() {
        let (m, _) = Masker::new(std::iter::empty(), 4, b"***");
        assert_eq!(m.mask_all(b"anything"), b"anything");
    }
}
