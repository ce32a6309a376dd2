//! Reading secrets to seal from a dotenv file or a JSON object (sealctl).
//!
//! Parse errors never quote the input: a syntax error names the file and
//! the line, not the line's text, which may hold a secret.

use std::cell::RefCell;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::error::Category;
use zeroize::Zeroizing;

use crate::error::{Error, InitError, Result};
use sealinit_core::bundle::Entry;
use sealinit_core::secret::SecretValue;

/// Reads a dotenv file (`dotenvy` syntax: `NAME=value`, `export`, quotes,
/// `#` comments, `${VAR}` expansion outside single quotes).
pub fn from_env_file(path: &Path) -> Result<Vec<Entry>> {
    const WHAT: &str = "env file";
    let bytes = read_input(WHAT, path)?;
    parse_env(&bytes).map_err(|reason| Error::Import {
        what: WHAT,
        path: path.to_owned(),
        reason,
    })
}

/// Reads a JSON object whose values are all strings. Duplicate keys are kept
/// (and then rejected by validation), not silently collapsed.
pub fn from_json_file(path: &Path) -> Result<Vec<Entry>> {
    const WHAT: &str = "JSON file";
    let bytes = read_input(WHAT, path)?;
    parse_json(&bytes).map_err(|reason| Error::Import {
        what: WHAT,
        path: path.to_owned(),
        reason,
    })
}

/// The whole input file, wiped when dropped.
fn read_input(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::read(path).map(Zeroizing::new).map_err(|source| {
        InitError::Input {
            what,
            path: path.to_owned(),
            source,
        }
        .into()
    })
}

/// Parses dotenv text. The error says what is wrong and where, never the
/// offending text.
pub fn parse_env(bytes: &[u8]) -> std::result::Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for item in dotenvy::from_read_iter(bytes) {
        match item {
            Ok((name, value)) => entries.push(Entry {
                name,
                value: SecretValue::from(value),
            }),
            Err(dotenvy::Error::LineParse(line, _)) => {
                let line = Zeroizing::new(line);
                return Err(format!(
                    "syntax error{} (the line is not shown, it may hold a secret); expected NAME=value, check quotes",
                    line_number(bytes, &line).map_or(String::new(), |n| format!(" on line {n}"))
                ));
            }
            Err(dotenvy::Error::Io(_)) => return Err("is not valid UTF-8 text".into()),
            Err(dotenvy::Error::EnvVar(e)) => {
                return Err(format!("variable expansion failed: {e}"));
            }
            Err(other) => return Err(other.to_string()),
        }
    }
    Ok(entries)
}

/// The 1-based number of the line where dotenvy's error text starts (it
/// reports the text from the offending line on: the rest of the file for an
/// unclosed quote).
fn line_number(bytes: &[u8], error_text: &str) -> Option<usize> {
    let first = error_text.split('\n').next().unwrap_or_default();
    let first = first.trim_end_matches('\r').as_bytes();
    bytes
        .split(|&b| b == b'\n')
        .position(|l| !first.is_empty() && l.strip_suffix(b"\r").unwrap_or(l) == first)
        .map(|n| n + 1)
}

/// Parses a JSON object of string values. The error gives a position and
/// a category, or a message of ours naming the key, never input text.
pub fn parse_json(bytes: &[u8]) -> std::result::Result<Vec<Entry>, String> {
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
                "expected one JSON object whose values are strings, like {{\"NAME\": \"value\"}} ({at})"
            ),
        }
    })
}

struct ObjectVisitor<'a> {
    error: &'a RefCell<Option<String>>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Entry>, A::Error> {
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed {
                name: &name,
                error: self.error,
            })?;
            entries.push(Entry { name, value });
        }
        Ok(entries)
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
    fn not_a_string<E: de::Error>(self) -> Result<SecretValue, E> {
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
