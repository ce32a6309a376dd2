//! Parsing secrets from dotenv text or a JSON object: for `sealctl`'s
//! imports and the service's import endpoint alike.
//!
//! Parse errors never quote the input: a syntax error names the line, not
//! the line's text, which may hold a secret.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::error::Category;
use zeroize::Zeroizing;

use sealinit_core::bundle::Entry;
use sealinit_core::secret::SecretValue;

use crate::route::{Delivery, Placeholder, RouteChange};

/// Parses dotenv text as Docker's `--env-file`, python-dotenv and Node's
/// dotenv accept it:
/// - a UTF-8 byte-order mark is skipped, `\r\n` line ends are `\n`;
/// - blank lines and `#` comment lines are skipped; `export NAME=value` is
///   `NAME=value`; spaces around `=` are allowed;
/// - unquoted values run to the end of the line, inner spaces kept, trailing
///   spaces and a ` # comment` dropped;
/// - `'single'` quotes are literal; `"double"` quotes take the escapes
///   `\n \r \t \" \\ \$`; both may span lines; after the closing quote only
///   spaces and a `# comment` may follow;
/// - `$` is literal unless `expand`: then `${NAME}`/`$NAME` outside single
///   quotes is the value of an earlier line (`\$` in double quotes stays a
///   `$`), and an unknown name is an error.
///
/// An error names the line and what is wrong, never the line's text.
pub fn parse_env(bytes: &[u8], expand: bool) -> std::result::Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("line {line} is not valid UTF-8 text")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(i) = text.find('\0') {
        let line = text[..i].matches('\n').count() + 1;
        return Err(format!(
            "line {line} holds a NUL byte, which an environment variable cannot hold"
        ));
    }
    let mut p = EnvParser {
        rest: text,
        line: 1,
        expand,
        entries: Vec::new(),
    };
    while !p.rest.is_empty() {
        p.statement()?;
    }
    Ok(p.entries)
}

struct EnvParser<'a> {
    rest: &'a str,
    /// The line `rest` starts on (1-based).
    line: usize,
    expand: bool,
    entries: Vec<Entry>,
}

impl EnvParser<'_> {
    /// A syntax error at `line`, placed by the name before it (a valid
    /// name is not secret; the line's text may be, and is not shown).
    fn err(&self, line: usize, what: &str) -> String {
        let place = match self.entries.last() {
            Some(e) => format!("line {line}, after {}", e.name),
            None => format!("line {line}"),
        };
        format!("syntax error on {place} (the line is not shown, it may hold a secret): {what}")
    }

    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// Consumes through the end of the current line.
    fn end_line(&mut self) {
        match self.rest.find('\n') {
            Some(i) => {
                self.rest = &self.rest[i + 1..];
                self.line += 1;
            }
            None => self.rest = "",
        }
    }

    /// After a value: only spaces, a `# comment`, and the line's end.
    fn expect_line_end(&mut self, start: usize) -> std::result::Result<(), String> {
        self.skip_spaces();
        let rest = self.rest.trim_start_matches('\r');
        if rest.is_empty() || rest.starts_with('\n') || rest.starts_with('#') {
            self.end_line();
            Ok(())
        } else {
            Err(self.err(
                start,
                "unexpected text after the closing quote; quote the whole value",
            ))
        }
    }

    fn statement(&mut self) -> std::result::Result<(), String> {
        let start = self.line;
        self.skip_spaces();
        let line_end = self.rest.find('\n').unwrap_or(self.rest.len());
        if self.rest[..line_end].trim_end_matches('\r').is_empty() || self.rest.starts_with('#') {
            self.end_line();
            return Ok(());
        }
        if let Some(after) = self.rest.strip_prefix("export") {
            if after.starts_with([' ', '\t']) {
                self.rest = after;
                self.skip_spaces();
            }
        }
        let name_len = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
            .unwrap_or(self.rest.len());
        let name = self.rest[..name_len].to_owned();
        self.rest = &self.rest[name_len..];
        self.skip_spaces();
        if name.is_empty() || !self.rest.starts_with('=') {
            return Err(self.err(
                start,
                "expected NAME=value (if this continues a value from an earlier line, quote that value: NAME=\"...\")",
            ));
        }
        // A valid name is not secret: the error names it and its line. An
        // invalid one may be a piece of a value, and is not shown.
        match sealinit_core::bundle::validate_name(name.as_bytes()) {
            Err(sealinit_core::bundle::PayloadError::InvalidName(_)) => {
                return Err(self.err(
                    start,
                    "the text before = is not a valid name (names match [A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
            Err(e) => return Err(format!("line {start}: {e}")),
            Ok(()) => {}
        }
        self.rest = &self.rest[1..];
        self.skip_spaces();
        let mut value = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                self.rest = &self.rest[1..];
                let v = self.quoted(q, start)?;
                self.expect_line_end(start)?;
                v
            }
            _ => {
                let end = self.rest.find('\n').unwrap_or(self.rest.len());
                let raw = &self.rest[..end];
                let raw = raw.strip_suffix('\r').unwrap_or(raw);
                // A comment starts at a `#` after a space or tab.
                let cut = raw
                    .char_indices()
                    .find(|&(i, c)| c == '#' && raw[..i].ends_with([' ', '\t']))
                    .map_or(raw.len(), |(i, _)| i);
                let raw = raw[..cut].trim_end_matches([' ', '\t']);
                // `TEXT==`: the padded end of a base64 value wrapped over
                // several lines, not a secret named TEXT.
                if !raw.is_empty() && raw.bytes().all(|b| b == b'=') {
                    return Err(self.err(
                        start,
                        "this looks like the end of a base64 value wrapped over several lines, not NAME=value: quote values that span lines (NAME=\"...\")",
                    ));
                }
                let v = match self.expand {
                    true => self.expanded(raw, start)?,
                    false => Zeroizing::new(raw.to_owned()),
                };
                self.end_line();
                v
            }
        };
        self.entries.push(Entry {
            name,
            // Moved out of the zeroizing wrapper, not copied.
            value: SecretValue::from(std::mem::take(&mut *value)),
            delivery: Default::default(),
        });
        Ok(())
    }

    /// The value of a quoted string whose opening quote `q` was consumed.
    /// Sized for the rest of the input, so it never grows (a growth would
    /// leave a freed copy behind).
    fn quoted(&mut self, q: char, start: usize) -> std::result::Result<Zeroizing<String>, String> {
        let mut out = Zeroizing::new(String::with_capacity(self.rest.len()));
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == q => {
                    self.rest = &self.rest[i + 1..];
                    return match q == '"' && self.expand {
                        true => self.expanded(&out, start),
                        false => Ok(out),
                    };
                }
                '\n' => {
                    self.line += 1;
                    out.push('\n');
                }
                '\r' if self.rest[i + 1..].starts_with('\n') => {}
                '\\' if q == '"' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    // With --expand, a marker that expansion turns back into
                    // a literal `$` (a NUL is refused in input).
                    Some((_, '$')) => out.push(if self.expand { '\u{0}' } else { '$' }),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.err(
            start,
            &format!(
                "the {} quote opened here is never closed",
                if q == '"' { "double" } else { "single" }
            ),
        ))
    }

    /// `v` with `${NAME}`/`$NAME` replaced by earlier values (`--expand`),
    /// and the NUL that marks an escaped `\$` in double quotes turned back
    /// into `$`.
    fn expanded(&self, v: &str, start: usize) -> std::result::Result<Zeroizing<String>, String> {
        let mut out = Zeroizing::new(String::with_capacity(v.len()));
        let mut rest = v;
        while let Some(i) = rest.find(['$', '\0']) {
            out.push_str(&rest[..i]);
            let marker = rest[i..].starts_with('\0');
            rest = &rest[i + 1..];
            if marker {
                out.push('$');
                continue;
            }
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let Some(close) = braced.find('}') else {
                    return Err(self.err(start, "`${` without its closing `}`"));
                };
                (&braced[..close], &braced[close + 1..])
            } else {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..len], &rest[len..])
            };
            if name.is_empty() {
                out.push('$');
                continue;
            }
            let Some(found) = self.entries.iter().rev().find(|e| e.name == name) else {
                return Err(self.err(
                    start,
                    &format!(
                        "${name} is not defined on an earlier line of this file (--expand never reads the environment)"
                    ),
                ));
            };
            out.push_str(&String::from_utf8_lossy(found.value.expose()));
            rest = after;
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Parses a JSON object whose values are strings, or objects
/// `{"value": "...", "delivery": "proxy", "hosts": [...], "in_body": true, "placeholder":
/// "keep-prefix"}`; each entry's route change comes with it (a plain string
/// changes nothing of its route). The error gives a position and a
/// category, or a message of ours naming the key, never input text.
pub fn parse_json(bytes: &[u8]) -> std::result::Result<Vec<(Entry, RouteChange)>, String> {
    let own_error = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = de
        .deserialize_map(ObjectVisitor { error: &own_error })
        .and_then(|v| de.end().map(|()| v));
    result.map_err(|e| {
        // serde_json's own messages can quote input ("invalid type: string
        // \"...\""), so only its position and category are used.
        let at = format!("line {}, column {}", e.line(), e.column());
        match (own_error.take(), e.classify()) {
            (Some(msg), _) => format!("{msg} ({at})"),
            (None, Category::Eof) => format!("unexpected end of file ({at}); the JSON is incomplete"),
            (None, Category::Syntax | Category::Io) => format!("not valid JSON ({at})"),
            (None, Category::Data) => format!(
                "expected one JSON object whose values are strings or objects, like {{\"NAME\": \"value\"}} or {{\"NAME\": {{\"value\": \"...\", \"delivery\": \"proxy\", \"hosts\": [\"api.example.com\"]}}}} ({at})"
            ),
        }
    })
}

struct ObjectVisitor<'a> {
    error: &'a RefCell<Option<String>>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Vec<(Entry, RouteChange)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let (value, route) = map.next_value_seed(EntrySeed {
                name: &name,
                error: self.error,
            })?;
            let mut entry = Entry::env(name, value);
            entry.delivery = route.delivery.unwrap_or_default();
            entries.push((entry, route));
        }
        Ok(entries)
    }
}

/// One value: a string, or an object with its value and route.
struct EntrySeed<'a> {
    name: &'a str,
    error: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = (SecretValue, RouteChange);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl EntrySeed<'_> {
    fn fail<E: de::Error>(&self, msg: String) -> E {
        *self.error.borrow_mut() = Some(msg.clone());
        E::custom(msg)
    }

    fn value_seed(&self) -> ValueSeed<'_> {
        ValueSeed {
            name: self.name,
            error: self.error,
        }
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = (SecretValue, RouteChange);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, or an object with \"value\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut value, mut route) = (None, RouteChange::default());
        let name = self.name;
        while let Some(key) = map.next_key::<String>()? {
            let bad = |what: &str| format!("{what} of {name:?} is not valid");
            match key.as_str() {
                "value" => value = Some(map.next_value_seed(self.value_seed())?),
                "delivery" => {
                    let d: String = map
                        .next_value()
                        .map_err(|_: A::Error| self.fail(bad("\"delivery\"")))?;
                    route.delivery = Some(Delivery::parse(&d).ok_or_else(|| {
                        self.fail(format!(
                            "\"delivery\" of {name:?} must be env, setup or proxy"
                        ))
                    })?);
                }
                "hosts" => {
                    route.hosts = Some(map.next_value().map_err(|_: A::Error| {
                        self.fail(bad("\"hosts\" (a list of host names)"))
                    })?)
                }
                "placeholder" => {
                    let p: String = map
                        .next_value()
                        .map_err(|_: A::Error| self.fail(bad("\"placeholder\"")))?;
                    route.placeholder = Some(Placeholder::parse(&p).ok_or_else(|| {
                        self.fail(format!(
                            "\"placeholder\" of {name:?} must be random or keep-prefix"
                        ))
                    })?);
                }
                "in_body" => {
                    route.in_body = Some(
                        map.next_value()
                            .map_err(|_: A::Error| self.fail(bad("\"in_body\" (true or false)")))?,
                    )
                }
                other => {
                    return Err(self.fail(format!(
                        "{name:?} has an unknown member {other:?}; use value, delivery, hosts, placeholder, in_body"
                    )));
                }
            }
        }
        let value = value.ok_or_else(|| self.fail(format!("{name:?} has no \"value\"")))?;
        Ok((value, route))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.value_seed()
            .visit_string(v)
            .map(|v| (v, RouteChange::default()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.value_seed()
            .visit_str(v)
            .map(|v| (v, RouteChange::default()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.value_seed().not_a_string()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.value_seed().not_a_string()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.value_seed().not_a_string()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.value_seed().not_a_string()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.value_seed().not_a_string()
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.value_seed().not_a_string()
    }
}

struct ValueSeed<'a> {
    name: &'a str,
    error: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = SecretValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SecretValue, D::Error> {
        // `deserialize_any`, so that a non-string reaches our `visit_*` and
        // never serde_json's own "invalid type" message.
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn not_a_string<E: de::Error, T>(self) -> Result<T, E> {
        let msg = format!(
            "the value of {:?} is not a string; every value must be a JSON string",
            self.name
        );
        *self.error.borrow_mut() = Some(msg.clone());
        Err(E::custom(msg))
    }
}

/// Accepts strings only. Every other `visit_*` is overridden so that serde's
/// default "invalid type" message, which quotes the value, is never built.
impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = SecretValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretValue, E> {
        Ok(SecretValue::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretValue, E> {
        Ok(SecretValue::from(v.to_owned()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_unit<E: de::Error>(self) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_none<E: de::Error>(self) -> Result<SecretValue, E> {
        self.not_a_string()
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretValue, A::Error> {
        self.not_a_string()
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<SecretValue, A::Error> {
        self.not_a_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(text: &str, expand: bool) -> Vec<(String, String)> {
        parse_env(text.as_bytes(), expand)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.name,
                    String::from_utf8(e.value.expose().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    /// How a writer would quote `v` in double quotes.
    fn double_quoted(v: &str) -> String {
        let mut out = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '$' => out.push_str("\\$"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        /// Any value without NUL survives double quoting (newlines, quotes,
        /// `$`, `#`, spaces), with and without --expand, and single
        /// quoting when it holds no single quote.
        #[test]
        fn quoted_values_round_trip(v in "[^\\x00\r]{0,40}", expand: bool) {
            let text = format!("A={}\nB=after\n", double_quoted(&v));
            prop_assert_eq!(
                values(&text, expand),
                vec![("A".to_owned(), v.clone()), ("B".to_owned(), "after".to_owned())]
            );
            if !v.contains('\'') {
                let text = format!("export A='{v}' # note\r\n");
                prop_assert_eq!(values(&text, expand), vec![("A".to_owned(), v.clone())]);
            }
        }

        /// Unquoted values (not starting with a quote) are literal: `$`,
        /// quotes inside, inner spaces.
        #[test]
        fn unquoted_values_are_literal(v in "[A-Za-z0-9$@%^&*()_+=:;,./-][A-Za-z0-9 $@%^&*()_+=:;,./'\"-]{0,30}[A-Za-z0-9$]") {
            let text = format!("\u{feff}A={v}\r\n");
            prop_assert_eq!(values(&text, false), vec![("A".to_owned(), v.clone())]);
        }

        /// Errors never contain the input's text.
        #[test]
        fn errors_never_quote_the_input(junk in "[A-Z]{8,16}", line in 1usize..5) {
            let mut text = "A=1\n".repeat(line - 1);
            text.push_str(&format!("{junk} {junk}\n"));
            let err = parse_env(text.as_bytes(), false).unwrap_err();
            prop_assert!(!err.contains(&junk), "{}", err);
            let want = format!("line {line}");
            prop_assert!(err.contains(&want), "{}", err);
        }
    }
}
