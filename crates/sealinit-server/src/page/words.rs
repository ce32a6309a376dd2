//! What a refusal says on the page: the store's errors in the page's own
//! words (its fields, checkboxes and buttons, not the CLI's flags or the
//! API's request fields), and the field each concerns.

use serde::{Deserialize, Serialize};

use sealinit_core::bundle::{MAX_ENTRY_LEN, MAX_PAYLOAD_LEN, PayloadError as P};
use sealinit_store::StoreError as E;

use crate::error::{ApiError, Field};

/// A secret the production-credential guard refused: its name, and what
/// it looks like and by which rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flagged {
    pub name: String,
    pub what: String,
    pub rule: String,
}

/// An error on a form: which field it concerns, what to say, and what the
/// user may now confirm.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FormError {
    pub name: Option<String>,
    pub value: Option<String>,
    /// Concerning the whole form.
    pub form: Option<String>,
    /// Refused by the guard: each is offered a "store it anyway" checkbox.
    pub flagged: Vec<Flagged>,
    /// The value was empty: a checkbox confirms an empty value.
    pub empty: bool,
}

impl FormError {
    pub fn form(text: impl Into<String>) -> Self {
        Self {
            form: Some(text.into()),
            ..Self::default()
        }
    }

    pub fn name(text: impl Into<String>) -> Self {
        Self {
            name: Some(text.into()),
            ..Self::default()
        }
    }

    /// The refusal `e` in the page's words, at its field.
    pub fn from_api(e: &ApiError) -> Self {
        let Some(cause) = e.cause.as_deref() else {
            return Self::form(e.message.clone());
        };
        let mut out = Self::default();
        let text = match cause {
            E::ProductionCredential {
                name,
                rule,
                what,
                advice,
                others,
                ..
            } => {
                out.flagged.push(Flagged {
                    name: name.clone(),
                    what: (*what).to_owned(),
                    rule: (*rule).to_owned(),
                });
                for (n, r) in others {
                    let what = sealinit_guard::RULES
                        .iter()
                        .find(|x| x.id == *r)
                        .map_or("a production credential", |x| x.what);
                    out.flagged.push(Flagged {
                        name: n.clone(),
                        what: what.to_owned(),
                        rule: (*r).to_owned(),
                    });
                }
                let names: Vec<&str> = out.flagged.iter().map(|f| f.name.as_str()).collect();
                format!(
                    "{} {} like {}: only staging and test credentials belong in sandboxes ({advice}). Nothing was changed. To store {} anyway, tick the box below{}, and submit again; the audit trail records it.",
                    list(&names),
                    if names.len() == 1 { "looks" } else { "look" },
                    match out.flagged.as_slice() {
                        [one] => format!("{} (rule {})", one.what, one.rule),
                        many => many
                            .iter()
                            .map(|f| format!("{} {} (rule {})", f.name, f.what, f.rule))
                            .collect::<Vec<_>>()
                            .join("; "),
                    },
                    if names.len() == 1 { "it" } else { "them" },
                    if matches!(e.field, Some(Field::Value)) && names.len() == 1 {
                        ", paste the value again"
                    } else {
                        ""
                    },
                )
            }
            E::EmptyValue { name } => {
                out.empty = true;
                format!(
                    "The value of {name} is empty. Enter a value, or tick “Store an empty value” and submit again."
                )
            }
            E::Payload(p) => match p {
                P::InvalidName(n) => format!(
                    "“{n}” is not a valid name: use letters, digits and _, not starting with a digit (API_KEY)."
                ),
                P::ReservedName(n) => format!(
                    "{n} starts with SEALINIT_, which configures sealinit itself: choose another name."
                ),
                P::CodeLoadingName(n) => format!(
                    "{n} changes how programs load or start code (like LD_PRELOAD or NODE_OPTIONS), so the page does not store it: a secret store should not inject code into every process of a sandbox. Choose another name; an administrator can allow it from the command line."
                ),
                P::NulInValue(n) => format!(
                    "The value of {n} holds a NUL byte, which an environment variable cannot hold."
                ),
                P::DuplicateName(n) => {
                    format!("{n} appears twice: keep one of them, then submit again.")
                }
                P::EntryTooLarge { name, len } => format!(
                    "{name} and its value are {len} bytes; one environment variable holds at most {MAX_ENTRY_LEN}. Store a shorter value (or the path of a file)."
                ),
                P::TooLarge { len } => format!(
                    "The repository's secrets would be {len} bytes together, over the {MAX_PAYLOAD_LEN}-byte limit of one sandbox's secrets. Nothing was changed."
                ),
                P::TooManyEntries { .. } | P::Structure(_) => e.message.clone(),
            },
            E::NoSuchSecret { repo, name } => format!(
                "{repo} has no secret named {name} (it may have just been deleted): reload the page."
            ),
            E::NoSuchVersion { name, version, .. } => format!(
                "Version {version} of {name} cannot be restored: there is no such version, it is a deletion, or its value was dropped by retention. Choose another in its history."
            ),
            E::InvalidRoute { name, reason } => {
                format!("{name} was not saved: {reason}. Nothing was changed.")
            }
            E::VersionConflict { name, expected, .. } => format!(
                "{name} changed since this page was loaded (it was version {expected}): check its history below, then enter the value again. Nothing was changed."
            ),
            _ => e.message.clone(),
        };
        match e.field {
            Some(Field::Name) => out.name = Some(text),
            Some(Field::Value) => out.value = Some(text),
            _ => out.form = Some(text),
        }
        out
    }

    pub fn any(&self) -> bool {
        self.name.is_some() || self.value.is_some() || self.form.is_some()
    }

    /// Every message, in the order of the form's fields.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        [&self.form, &self.name, &self.value]
            .into_iter()
            .filter_map(|m| m.as_deref())
    }
}

/// What `e` says on the page, in one message.
pub fn say(e: &ApiError) -> String {
    FormError::from_api(e)
        .messages()
        .next()
        .map_or_else(|| e.message.clone(), str::to_owned)
}

/// An import's parse error (the service's "import: syntax error on line
/// 3, after A (the line is not shown, it may hold a secret): ...; nothing
/// was changed") as the page says it, where the pasted text is in view.
pub fn import_words(message: &str) -> String {
    let m = message.strip_prefix("import: ").unwrap_or(message);
    let m = m.replace(" (the line is not shown, it may hold a secret)", "");
    let m = m.replace("; nothing was changed", ". Nothing was changed.");
    let mut c = m.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => m,
    }
}

/// "A", "A and B", "A, B and C".
pub fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
