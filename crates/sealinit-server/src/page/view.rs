//! The page's HTML (maud: every interpolation is escaped). Nothing here
//! receives a value: the views get names, sizes, versions, times, actors
//! and messages, and the value fields always start empty.

use maud::{DOCTYPE, Markup, html};

use sealinit_store::{AuditRecord, Delivery, HistoryEntry};

use super::session::Flash;
pub use super::words::FormError;
use crate::service::{RepoSummary, SecretMeta};

/// Who is signed in, for the header, and the session's CSRF token.
#[derive(Debug)]
pub struct Chrome {
    pub who: String,
    pub csrf: String,
}

/// A path segment, percent-encoded (a repository's `/` included).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn repo_href(repo: &str) -> String {
    format!("/r/{}", seg(repo))
}

pub fn secret_href(repo: &str, name: &str) -> String {
    format!("/r/{}/s/{}", seg(repo), seg(name))
}

/// Who did something, as the audit trail names them ("token deploy
/// (tok_…)"): the name first, the id unbroken and secondary.
pub(super) fn actor(who: &str) -> Markup {
    match who.strip_suffix(')').and_then(|w| w.rsplit_once(" (")) {
        Some((name, id)) if !id.contains(' ') => html! {
            (name) " " span.id { "(" (id) ")" }
        },
        _ => html! { (who) },
    }
}

/// Unix seconds as the page shows times.
fn time(t: i64) -> String {
    rfc_time(&sealinit_core::time::rfc3339(t.max(0) as u64))
}

/// "2026-12-01T10:20:30Z" → "2026-12-01 10:20:30 UTC"
pub(super) fn rfc_time(s: &str) -> String {
    s.replacen('T', " ", 1).replace('Z', " UTC")
}

/// How long ago `t` (Unix seconds) was, seen at `now`: "just now",
/// "3 min ago", "5 h ago", "2 days ago", then the date.
fn ago(t: i64, now: i64) -> String {
    let d = (now - t).max(0);
    match d {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", d / 60),
        3600..86_400 => format!("{} h ago", d / 3600),
        86_400..172_800 => "yesterday".to_owned(),
        172_800..2_592_000 => format!("{} days ago", d / 86_400),
        _ => sealinit_core::time::rfc3339(t.max(0) as u64)[..10].to_owned(),
    }
}

/// A time as the page shows it: how long ago, with the exact UTC time in
/// its title and `datetime` (a screen reader and a hover both get it).
pub(super) fn when(t: i64) -> Markup {
    let exact = sealinit_core::time::rfc3339(t.max(0) as u64);
    html! {
        time datetime=(exact) title=(rfc_time(&exact)) {
            (ago(t, sealinit_core::time::now() as i64))
        }
    }
}

/// [`when`] of an RFC 3339 time (the service's `updated_at`).
pub(super) fn when_rfc(s: &str) -> Markup {
    match sealinit_core::time::parse_rfc3339(s) {
        Some(t) => when(t),
        None => html! { (rfc_time(s)) },
    }
}

fn size(n: usize) -> String {
    match n {
        0..1024 => format!("{n} B"),
        _ => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}

pub(super) fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// The whole document around `body`.
pub(super) fn layout(title: &str, chrome: Option<&Chrome>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · sealinit" }
                link rel="stylesheet" href="/static/sealinit.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "sealinit" }
                    @if let Some(c) = chrome {
                        span.who { "Signed in as " (actor(&c.who)) }
                        form.inline method="post" action="/signout" {
                            (csrf(&c.csrf))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// The result of what was just done, at the top of the page: it has the
/// focus (a screen reader reads it; Tab goes on from there), and the title
/// says it too ([`titled`]).
pub(super) fn flash(f: Option<&Flash>) -> Markup {
    html! {
        @if let Some(f) = f {
            @if f.ok {
                p.flash.ok role="status" tabindex="-1" autofocus { (f.text) }
            } @else {
                p.flash.bad role="alert" tabindex="-1" autofocus { (f.text) }
            }
        }
    }
}

/// A page's title with the result shown on it first: `Added API_KEY
/// (version 1). – Secrets of acme/web`, or `Error: ... – ...`.
pub(super) fn titled(title: &str, f: Option<&Flash>) -> String {
    match f {
        Some(f) if f.ok => format!("{} – {title}", f.text),
        Some(f) => format!("Error: {} – {title}", f.text),
        None => title.to_owned(),
    }
}

/// An error shown next to its field, with the id `aria-describedby` names.
pub(super) fn field_error(id: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.error id=(id) { (m) }
        }
    }
}

/// What went wrong, at the top of the main area: announced (`alert`),
/// each message a link to its field. The first field in error has the
/// focus (`autofocus`, which also scrolls to it).
pub(super) fn summary(items: &[(&str, &str)]) -> Markup {
    html! {
        @if !items.is_empty() {
            section.summary role="alert" aria-labelledby="summary-title" {
                h2 #summary-title { "There is a problem" }
                ul {
                    @for (field, message) in items {
                        li { a href=(format!("#{field}")) { (message) } }
                    }
                }
            }
        }
    }
}

/// A page's title after a refused form: `Error: Secrets of acme/web`.
pub(super) fn error_title(title: &str, error: bool) -> String {
    match error {
        true => format!("Error: {title}"),
        false => title.to_owned(),
    }
}

pub fn signin(csrf_token: &str, error: Option<&str>) -> Markup {
    layout(
        &error_title("Sign in", error.is_some()),
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with an API token (" code { "sit_…" } "), made with "
                code { "sealctl tokens create" } ". The page shows the repositories the token may see, and does what its scopes allow." }
            form.card method="post" action="/signin" {
                (csrf(csrf_token))
                label for="token" { "Token" }
                input #token type="password" name="token" required autocomplete="off"
                    autocapitalize="off" spellcheck="false" autofocus
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| "token-error")];
                (field_error("token-error", error))
                div.actions { button type="submit" { "Sign in" } }
            }
        },
    )
}

/// The one-time sign-in link's page: who is signing in, and one button.
pub fn login_link(csrf_token: &str, code: &str, error: Option<&str>) -> Markup {
    layout(
        &error_title("Sign in", error.is_some()),
        None,
        html! {
            h1 { "Sign in as administrator" }
            (summary(&error.map(|m| ("link-name", m)).into_iter().collect::<Vec<_>>()))
            p { "This link, printed by " code { "sealctl serve --login-link" } ", signs one browser in as admin, once. It makes an admin token that expires with the session." }
            form.card method="post" action=(format!("/login/{}", seg(code))) {
                (csrf(csrf_token))
                label for="link-name" { "Your name" }
                input #link-name type="text" name="name" required maxlength=(LINK_NAME_MAX) autocomplete="name"
                    spellcheck="false" autofocus aria-describedby="link-name-hint"
                    aria-invalid=[error.map(|_| "true")];
                p.hint #link-name-hint { "The audit trail names what this session does after it: “Ana Lima (sign-in link)”." }
                div.actions { button type="submit" { "Sign in" } }
            }
        },
    )
}

/// The longest name a sign-in link session may give.
pub const LINK_NAME_MAX: usize = 64;

/// What a refused "New repository" or "Open a repository" form left: the
/// name typed, the error.
#[derive(Default)]
pub struct NewRepo<'a> {
    pub name: &'a str,
    pub error: Option<&'a str>,
    pub open: &'a str,
    pub open_error: Option<&'a str>,
}

pub fn repos(
    chrome: &Chrome,
    flash_msg: Option<&Flash>,
    repos: &[RepoSummary],
    new: &NewRepo<'_>,
) -> Markup {
    let mut links = Vec::new();
    if let Some(m) = new.error {
        links.push(("new-repo", m));
    }
    if let Some(m) = new.open_error {
        links.push(("repo", m));
    }
    layout(
        &error_title(&titled("Repositories", flash_msg), !links.is_empty()),
        Some(chrome),
        html! {
            h1 { "Repositories" }
            (summary(&links))
            (flash(flash_msg))
            @if repos.is_empty() {
                p.empty { "There is no repository yet. Create one below, then add its secrets." }
            } @else {
                div.rows {
                    table {
                        caption.sr { "Repositories this token may see" }
                        thead { tr { th scope="col" { "Repository" } th scope="col" { "Secrets" } th scope="col" { "Last change" } } }
                        tbody {
                            @for r in repos {
                                tr {
                                    td { a href=(repo_href(&r.repo)) { (r.repo) } }
                                    td.num data-label="Secrets" { (r.secrets) }
                                    td data-label="Last change" { (when_rfc(&r.updated_at)) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New repository" }
            form.card method="post" action="/repos/new" {
                (csrf(&chrome.csrf))
                label for="new-repo" { "Name" }
                p.hint #new-repo-hint { "owner/name, as the repository is named on its forge" }
                input #new-repo type="text" name="name" required placeholder="owner/name" value=(new.name)
                    autocapitalize="off" spellcheck="false" aria-invalid=[new.error.map(|_| "true")]
                    aria-describedby=(if new.error.is_some() { "new-repo-hint new-repo-error" } else { "new-repo-hint" })
                    autofocus[new.error.is_some()];
                (field_error("new-repo-error", new.error))
                div.actions { button type="submit" { "Create" } }
            }
            h2 { "Open a repository" }
            form.card method="get" action="/r" {
                label for="repo" { "Repository" }
                input #repo type="text" name="repo" required placeholder="owner/name" value=(new.open)
                    autocapitalize="off" spellcheck="false" aria-invalid=[new.open_error.map(|_| "true")]
                    aria-describedby=[new.open_error.map(|_| "repo-error")] autofocus[new.open_error.is_some()];
                (field_error("repo-error", new.open_error))
                div.actions { button type="submit" { "Open" } }
            }
        },
    )
}

fn tabs(repo: &str, current: &str, audit: bool) -> Markup {
    html! {
        nav.tabs aria-label="Repository" {
            a href=(repo_href(repo)) aria-current=[(current == "secrets").then_some("page")] { "Secrets" }
            @if audit {
                a href=(format!("{}/audit", repo_href(repo))) aria-current=[(current == "audit").then_some("page")] { "Audit" }
            }
        }
    }
}

fn crumbs(repo: &str, name: Option<&str>) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/" { "Repositories" }
            " / "
            @match name {
                Some(n) => { a href=(repo_href(repo)) { (repo) } " / " span aria-current="page" { (n) } }
                None => { span aria-current="page" { (repo) } }
            }
        }
    }
}

/// What a refusal lets the user confirm, shown only after it: a box per
/// secret the guard refused, naming it and the rule, and one for an empty
/// value. The first has the focus when `focus`.
pub(super) fn confirm_boxes(id: &str, e: &FormError, focus: bool) -> Markup {
    html! {
        @for (i, f) in e.flagged.iter().enumerate() {
            div.check {
                input id=(format!("{id}-allow-{i}")) type="checkbox" name="allow_production" value=(f.name)
                    autofocus[focus && i == 0];
                label for=(format!("{id}-allow-{i}")) {
                    "Store " (f.name) " anyway, although it looks like " (f.what) " (rule " (f.rule) ")"
                }
            }
        }
        @if e.empty {
            div.check {
                input id=(format!("{id}-empty")) type="checkbox" name="allow_empty" value="on"
                    autofocus[focus && e.flagged.is_empty()];
                label for=(format!("{id}-empty")) { "Store an empty value" }
            }
        }
    }
}

/// A value field: always empty, never autocompleted or spell-checked.
pub(super) fn value_field(id: &str, label: &str, error: Option<&str>, focus: bool) -> Markup {
    let err_id = format!("{id}-error");
    html! {
        label for=(id) { (label) }
        textarea id=(id) name="value" rows="3" autocomplete="off" autocapitalize="off"
            spellcheck="false" aria-invalid=[error.map(|_| "true")] autofocus[focus]
            aria-describedby=(match error { Some(_) => format!("{id}-hint {err_id}"), None => format!("{id}-hint") }) {}
        p.hint id=(format!("{id}-hint")) { "Stored as typed, with line ends as LF (\\n)." }
        (field_error(&err_id, error))
    }
}

/// Where a secret goes: its delivery, and a proxy secret's hosts (one per
/// line, or separated by spaces or commas).
fn delivery_fields(id: &str, current: Delivery, hosts: &[String], in_body: bool) -> Markup {
    let select = format!("{id}-delivery");
    let option = |d: Delivery, label: &str| {
        html! { option value=(d.as_str()) selected[current == d] { (label) } }
    };
    html! {
        label for=(select) { "Delivery" }
        select id=(select) name="delivery" aria-describedby=(format!("{select}-hint")) {
            (option(Delivery::Env, "Environment: the setup steps and the agent"))
            (option(Delivery::Setup, "Setup only: wiped before the agent starts"))
            (option(Delivery::Proxy, "Through the proxy: the agent sees a placeholder"))
        }
        p.hint id=(format!("{select}-hint")) { "Through the proxy, the value is put into requests to the hosts below only, outside the sandbox." }
        label for=(format!("{id}-hosts")) { "Hosts (proxy only)" }
        textarea id=(format!("{id}-hosts")) name="hosts" rows="2" autocomplete="off"
            autocapitalize="off" spellcheck="false" aria-describedby=(format!("{id}-hosts-hint")) {
            (hosts.join("\n"))
        }
        p.hint id=(format!("{id}-hosts-hint")) { "One per line: api.stripe.com, *.example.com, with an optional :port." }
        div.check {
            input type="checkbox" id=(format!("{id}-in-body")) name="in_body" value="on" checked[in_body];
            label for=(format!("{id}-in-body")) { "Also put the value into request bodies to these hosts (proxy only)" }
        }
    }
}

/// A secret's delivery as a table cell or fact: "proxy → api.stripe.com".
fn delivery_text(s: &SecretMeta) -> String {
    match s.delivery {
        Delivery::Proxy if s.in_body => format!("proxy → {} (bodies too)", s.hosts.join(", ")),
        Delivery::Proxy => format!("proxy → {}", s.hosts.join(", ")),
        d => d.as_str().to_owned(),
    }
}

/// What the Secrets tab shows.
#[derive(Debug)]
pub struct SecretsTab<'a> {
    pub repo: &'a str,
    /// The page of secrets shown.
    pub secrets: &'a [SecretMeta],
    /// How many the repository holds, how many match the search, which
    /// page of how many, and the search.
    pub total: usize,
    pub matched: usize,
    pub page: usize,
    pub pages: usize,
    pub q: &'a str,
    pub can_write: bool,
    pub can_audit: bool,
    /// What "Add secret" sent when it failed (never its value).
    pub add: &'a AddDraft,
    pub add_error: FormError,
    /// The .env text "Import" sent when it failed: what the user typed,
    /// given back so that "line 3" points at text they still have.
    pub import_text: &'a str,
    pub import_error: FormError,
    /// The repository's egress policy (shown to those who may change it).
    pub egress: Option<&'a sealinit_core::bundle::Egress>,
    /// The organisation secrets it receives.
    pub from_org: &'a [SecretMeta],
    /// Its environments with secrets, and how many each.
    pub environments: &'a [(String, usize)],
    /// Its secrets deleted last, which may be restored.
    pub deleted: &'a [sealinit_store::DeletedSecret],
}

/// What a refused "Add secret" form sent, but its value: shown again.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AddDraft {
    pub name: String,
    pub delivery: Delivery,
    pub hosts: Vec<String>,
    pub in_body: bool,
}

/// The summary's links for a refused form: each message to its field (a
/// refusal to be confirmed, to its first box); and the field to focus.
fn error_items<'a>(e: &'a FormError, id: &str, first: &str) -> (Vec<(String, &'a str)>, String) {
    let confirm = match (e.flagged.is_empty(), e.empty) {
        (false, _) => Some(format!("{id}-allow-0")),
        (true, true) => Some(format!("{id}-empty")),
        (true, false) => None,
    };
    let mut items = Vec::new();
    if let Some(m) = &e.form {
        items.push((
            confirm.clone().unwrap_or_else(|| first.to_owned()),
            m.as_str(),
        ));
    }
    if let Some(m) = &e.name {
        items.push((format!("{id}-name"), m.as_str()));
    }
    if let Some(m) = &e.value {
        items.push((format!("{id}-value"), m.as_str()));
    }
    let focus = items.first().map(|(f, _)| f.clone()).unwrap_or_default();
    (items, focus)
}

/// Secrets a page of the Secrets tab lists.
pub const PER_PAGE: usize = 100;

/// The Secrets tab's address for page `page` of search `q`.
fn listing_href(repo: &str, q: &str, page: usize) -> String {
    let mut href = repo_href(repo);
    let mut sep = '?';
    if !q.is_empty() {
        href.push_str(&format!("?q={}", seg(q)));
        sep = '&';
    }
    if page > 1 {
        href.push_str(&format!("{sep}page={page}"));
    }
    href
}

/// The count, a search (a GET form: no script), and where the forms are.
fn listing_head(t: &SecretsTab) -> Markup {
    let repo = t.repo;
    html! {
        h2 #secrets { "Secrets (" (t.total) ")" }
        @if t.can_write {
            p.jump { a href="#add" { "Add secret" } " · " a href="#import" { "Import .env" } }
        }
        @if t.total > 0 {
            form.inline.search method="get" action=(repo_href(repo)) role="search" {
                label for="q" { "Search names" }
                input #q type="search" name="q" value=(t.q) autocomplete="off" autocapitalize="off" spellcheck="false";
                button type="submit" { "Search" }
                @if !t.q.is_empty() {
                    " " a href=(repo_href(repo)) { "Show all" }
                }
            }
            @if !t.q.is_empty() {
                p.hint role="status" { (t.matched) " of " (t.total) " match “" (t.q) "”." }
            }
        }
    }
}

/// Links to the other pages of the listing.
fn listing_pages(t: &SecretsTab) -> Markup {
    html! {
        @if t.pages > 1 {
            nav.pages aria-label="Pages of secrets" {
                @if t.page > 1 {
                    a rel="prev" href=(listing_href(t.repo, t.q, t.page - 1)) { "Previous" } " "
                }
                span aria-current="page" { "Page " (t.page) " of " (t.pages) }
                @if t.page < t.pages {
                    " " a rel="next" href=(listing_href(t.repo, t.q, t.page + 1)) { "Next" }
                }
            }
        }
    }
}

pub fn secrets_tab(chrome: &Chrome, flash_msg: Option<&Flash>, t: &SecretsTab) -> Markup {
    let repo = t.repo;
    let base = repo_href(repo);
    let (mut items, mut focus) = error_items(&t.add_error, "add", "add-name");
    // A name refused, or a value to paste again: focus there, not on the box.
    if t.add_error.name.is_some() {
        focus = "add-name".into();
    } else if t.add_error.any() {
        focus = "add-value".into();
    }
    if t.import_error.any() {
        let (more, f) = error_items(&t.import_error, "import", "import-content");
        items.extend(more);
        focus = f;
    }
    let links: Vec<(&str, &str)> = items.iter().map(|(f, m)| (f.as_str(), *m)).collect();
    layout(
        &error_title(
            &titled(&format!("Secrets of {repo}"), flash_msg),
            !links.is_empty(),
        ),
        Some(chrome),
        html! {
            (crumbs(repo, None))
            h1 { (repo) }
            (tabs(repo, "secrets", t.can_audit))
            (summary(&links))
            (flash(flash_msg))
            @if let Some(name) = flash_msg.and_then(|f| f.restore.as_ref()).filter(|_| t.can_write) {
                (restore_button(repo, name, &chrome.csrf, false))
            }
            (listing_head(t))
            @if t.total == 0 {
                p.empty { "No secrets yet. Sandboxes of " (repo) " start without any; add one below or import a .env file." }
            } @else if t.secrets.is_empty() {
                p.empty { "No secret name contains “" (t.q) "”." }
            } @else {
                p.hint { "Values are write-only: they are never shown here. Sandboxes launched from now on get these as environment variables." }
                div.rows {
                    table {
                        caption.sr { "Secrets of " (repo) }
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Version" }
                            th scope="col" { "Updated" } th scope="col" { "By" }
                            th scope="col" { "Delivery" }
                        } }
                        tbody {
                            @for s in t.secrets {
                                tr {
                                    td { a href=(secret_href(repo, &s.name)) { code { (s.name) } } }
                                    td.num data-label="Size" { (size(s.size)) }
                                    td.num data-label="Version" { (s.version) }
                                    td data-label="Updated" { (when_rfc(&s.updated_at)) }
                                    td data-label="By" { (actor(&s.updated_by)) }
                                    td data-label="Delivery" { (delivery_text(s)) }
                                }
                            }
                        }
                    }
                }
            }
            (listing_pages(t))
            (deleted_list(t, &chrome.csrf))
            (super::holders::received(repo, t.from_org, t.environments))
            @if t.can_write {
                div.forms {
                section aria-labelledby="add" {
                h2 #add { "Add secret" }
                form.card method="post" action=(format!("{base}/add")) {
                    (csrf(&chrome.csrf))
                    label for="add-name" { "Name" }
                    input #add-name type="text" name="name" required value=(t.add.name)
                        pattern="[A-Za-z_][A-Za-z0-9_]*" autocomplete="off" autocapitalize="off"
                        spellcheck="false" aria-invalid=[t.add_error.name.as_ref().map(|_| "true")]
                        aria-describedby=(if t.add_error.name.is_some() { "add-name-error" } else { "add-name-hint" })
                        autofocus[focus == "add-name"];
                    p.hint #add-name-hint { "Letters, digits and _, not starting with a digit: API_KEY." }
                    (field_error("add-name-error", t.add_error.name.as_deref()))
                    (value_field("add-value", "Value", t.add_error.value.as_deref(), focus == "add-value"))
                    (field_error("add-error", t.add_error.form.as_deref()))
                    (confirm_boxes("add", &t.add_error, false))
                    (delivery_fields("add", t.add.delivery, &t.add.hosts, t.add.in_body))
                    div.actions { button type="submit" { "Add secret" } }
                }
                }
                section aria-labelledby="import" {
                h2 #import { "Import .env" }
                form.card method="post" action=(format!("{base}/import")) enctype="multipart/form-data" {
                    (csrf(&chrome.csrf))
                    p.hint #import-hint { "All or nothing: if any line is wrong, nothing changes. Existing names get a new version." }
                    label for="import-content" { "Paste a .env file" }
                    textarea #import-content name="content" rows=(if t.import_text.is_empty() { 5 } else { 10 }) autocomplete="off"
                        autocapitalize="off" spellcheck="false"
                        aria-invalid=[t.import_error.any().then_some("true")]
                        aria-describedby=(if t.import_error.any() { "import-hint import-error" } else { "import-hint" })
                        autofocus[focus == "import-content"] { (t.import_text) }
                    label for="import-file" { "or upload one" }
                    input #import-file type="file" name="file" accept=".env,text/plain";
                    (field_error("import-error", t.import_error.messages().next()))
                    (confirm_boxes("import", &t.import_error, focus == "import-allow-0"))
                    div.actions { button type="submit" { "Import" } }
                }
                }
                @if let Some(e) = t.egress {
                    section aria-labelledby="egress" {
                    h2 #egress { "Egress" }
                    form.card method="post" action=(format!("{base}/egress")) {
                        (csrf(&chrome.csrf))
                        p.hint #egress-hint { "What the egress proxy does with a sandbox's requests that carry no secret. Requests with a proxy secret go to that secret's hosts only, whatever this says." }
                        label for="egress-default" { "Other requests" }
                        select #egress-default name="default" aria-describedby="egress-hint" {
                            option value="allow" selected[e.default == sealinit_core::bundle::EgressDefault::Allow] { "Allow every host" }
                            option value="deny" selected[e.default == sealinit_core::bundle::EgressDefault::Deny] { "Deny, except the hosts below and those of proxy secrets" }
                        }
                        label for="egress-allow" { "Hosts always allowed" }
                        textarea #egress-allow name="allow" rows="2" autocomplete="off" autocapitalize="off"
                            spellcheck="false" { (e.allow.join("\n")) }
                        div.actions { button type="submit" { "Save egress policy" } }
                    }
                    }
                }
                }
            } @else {
                p.hint { "This token may not change the secrets of " (repo) "." }
            }
        },
    )
}

/// A form with one button that restores deleted secret `name`.
fn restore_button(repo: &str, name: &str, csrf_token: &str, short: bool) -> Markup {
    html! {
        form.inline method="post" action=(format!("{}/restore", secret_href(repo, name))) {
            (csrf(csrf_token))
            @if short {
                button.secondary type="submit" aria-label=(format!("Restore {name}")) { "Restore" }
            } @else {
                button.secondary type="submit" { "Restore " (name) }
            }
        }
    }
}

/// Deleted secrets listed at most, newest names first by name.
const DELETED_SHOWN: usize = 100;

/// The secrets deleted last, with when, by whom, and Restore.
fn deleted_list(t: &SecretsTab, csrf_token: &str) -> Markup {
    let shown = &t.deleted[..t.deleted.len().min(DELETED_SHOWN)];
    html! {
        @if !t.deleted.is_empty() {
            section aria-labelledby="deleted" {
                h2 #deleted { "Deleted secrets (" (t.deleted.len()) ")" }
                p.hint { "Sandboxes no longer get these. Their history is kept: Restore makes the last value current again, as a new version." }
                div.rows {
                    table {
                        caption.sr { "Deleted secrets of " (t.repo) }
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Deleted" } th scope="col" { "By" }
                            @if t.can_write { th scope="col" { span.sr { "Action" } } }
                        } }
                        tbody {
                            @for d in shown {
                                tr {
                                    td { code { (d.name) } }
                                    td data-label="Deleted" { (when(d.at)) }
                                    td data-label="By" { (actor(&d.actor)) }
                                    @if t.can_write {
                                        td.action {
                                            @match d.restorable {
                                                Some(_) => (restore_button(t.repo, &d.name, csrf_token, true)),
                                                None => span.hint { "value pruned" },
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if t.deleted.len() > shown.len() {
                    p.hint { "And " (t.deleted.len() - shown.len()) " more, not listed." }
                }
            }
        }
    }
}

/// What a secret's page shows.
#[derive(Debug)]
pub struct SecretView<'a> {
    pub repo: &'a str,
    pub meta: &'a SecretMeta,
    pub history: &'a [HistoryEntry],
    /// Versions made by a roll back, and the version each restored.
    pub restored: &'a [(i64, i64)],
    pub can_write: bool,
    pub can_audit: bool,
    pub error: FormError,
    /// The delivery a refused update asked for, shown again.
    pub draft: Option<&'a AddDraft>,
}

pub fn secret(chrome: &Chrome, flash_msg: Option<&Flash>, v: &SecretView) -> Markup {
    let (repo, m) = (v.repo, v.meta);
    let href = secret_href(repo, &m.name);
    let (items, _) = error_items(&v.error, "update", "update-value");
    let links: Vec<(&str, &str)> = items.iter().map(|(f, m)| (f.as_str(), *m)).collect();
    let (delivery, hosts, in_body) = match v.draft {
        Some(d) => (d.delivery, d.hosts.as_slice(), d.in_body),
        None => (m.delivery, m.hosts.as_slice(), m.in_body),
    };
    layout(
        &error_title(
            &titled(&format!("{} in {repo}", m.name), flash_msg),
            !links.is_empty(),
        ),
        Some(chrome),
        html! {
            (crumbs(repo, Some(&m.name)))
            h1 { code { (m.name) } }
            (tabs(repo, "secrets", v.can_audit))
            (summary(&links))
            (flash(flash_msg))
            dl.facts {
                dt { "Size" } dd { (size(m.size)) }
                dt { "Version" } dd { (m.version) }
                dt { "Updated" } dd { (when_rfc(&m.updated_at)) }
                dt { "By" } dd { (actor(&m.updated_by)) }
                dt { "Created" } dd { (when_rfc(&m.created_at)) }
                dt { "Delivery" } dd { (delivery_text(m)) }
            }
            @if v.can_write {
                h2 #update { "Update" }
                form.card method="post" action=(format!("{href}/update")) {
                    (csrf(&chrome.csrf))
                    input type="hidden" name="if_version" value=(m.version);
                    p.hint { "The current value is never shown. A new value becomes version " (m.version + 1) "." }
                    (value_field("update-value", "New value", v.error.value.as_deref(), v.error.any()))
                    (field_error("update-error", v.error.form.as_deref()))
                    (confirm_boxes("update", &v.error, false))
                    (delivery_fields("update", delivery, hosts, in_body))
                    div.actions { button type="submit" { "Save new value" } }
                }
            }
            h2 #history { "History" }
            div.rows {
                table {
                    caption.sr { "Versions of " (m.name) ", newest first" }
                    thead { tr {
                        th scope="col" { "Version" } th scope="col" { "When" } th scope="col" { "By" }
                        th scope="col" { "Size" }
                        @if v.can_write { th scope="col" { span.sr { "Action" } } }
                    } }
                    tbody {
                        @for h in v.history.iter().rev() {
                            tr {
                                td.num {
                                    (h.version)
                                    @if let Some((_, from)) = v.restored.iter().find(|(v, _)| *v == h.version) {
                                        " (restored from " (from) ")"
                                    }
                                    @if h.version == m.version { " (current)" }
                                }
                                td data-label="When" { (when(h.at)) }
                                td data-label="By" { (actor(&h.actor)) }
                                td.num data-label="Size" { @if h.deleted { "deleted" } @else { (size(h.size.max(0) as usize)) } }
                                @if v.can_write {
                                    td.action {
                                        @if h.version != m.version && !h.deleted && !h.pruned {
                                            form.inline method="post" action=(format!("{href}/rollback")) {
                                                (csrf(&chrome.csrf))
                                                input type="hidden" name="to" value=(h.version);
                                                button.secondary type="submit" { "Roll back to version " (h.version) }
                                            }
                                        } @else if h.pruned {
                                            span.hint { "value pruned" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if v.can_write {
                h2 #delete { "Delete" }
                p { a.danger href=(format!("{href}/delete")) { "Delete " (m.name) "…" } }
            }
        },
    )
}

pub fn confirm_delete(chrome: &Chrome, repo: &str, name: &str) -> Markup {
    let href = secret_href(repo, name);
    layout(
        &format!("Delete {name}?"),
        Some(chrome),
        html! {
            (crumbs(repo, Some(name)))
            h1 { "Delete " code { (name) } "?" }
            p { "Sandboxes launched after this will not get " code { (name) } ". Its history stays in the store and the audit trail." }
            form.card method="post" action=(format!("{href}/delete")) {
                (csrf(&chrome.csrf))
                div.actions {
                    button.danger type="submit" { "Delete " (name) }
                    // Cancel has the focus: Enter alone never deletes.
                    a.cancel href=(href) autofocus { "Cancel" }
                }
            }
        },
    )
}

/// What the audit trail recorded, in the page's words.
fn action_words(action: &str) -> &str {
    match action {
        "set" => "Updated",
        "rm" => "Deleted",
        "rollback" => "Rolled back",
        "route" => "Reach changed",
        "seal" => "Bundle minted",
        "egress" => "Sent through the proxy",
        "egress-policy" => "Egress policy changed",
        "repo-create" => "Repository created",
        "repo-rm" => "Repository removed",
        "scan" => "Scanned",
        "audit-prune" => "Audit trail pruned",
        "rotate-data-key" => "Data key rotated",
        "rotate-master-key" => "Master key rotated",
        "retire-master-key" => "Master key retired",
        "token-create" => "Token created",
        "token-revoke" => "Token revoked",
        other => other,
    }
}

/// Audit records a page of the Audit tab lists.
pub const AUDIT_PER_PAGE: usize = 200;

/// Links to the newer and older pages of the audit trail.
fn audit_pages(repo: &str, (page, pages): (usize, usize)) -> Markup {
    let href = |p: usize| format!("{}/audit?page={p}", repo_href(repo));
    html! {
        @if pages > 1 {
            nav.pages aria-label="Pages of the audit trail" {
                @if page > 1 { a rel="prev" href=(href(page - 1)) { "Newer" } " " }
                span aria-current="page" { "Page " (page) " of " (pages) }
                @if page < pages { " " a rel="next" href=(href(page + 1)) { "Older" } }
            }
        }
    }
}

pub fn audit(
    chrome: &Chrome,
    repo: &str,
    records: &[AuditRecord],
    pages: (usize, usize),
) -> Markup {
    layout(
        &format!("Audit of {repo}"),
        Some(chrome),
        html! {
            (crumbs(repo, None))
            h1 { (repo) }
            (tabs(repo, "audit", true))
            h2 { "Audit trail" }
            @if records.is_empty() {
                p.empty { "Nothing recorded for " (repo) " yet." }
            } @else {
                p.hint { "Newest first: every change, every bundle minted and every scan, by whom. Names and versions only, never values." }
                div.rows {
                    table {
                        caption.sr { "Audit trail of " (repo) }
                        thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "Details" } } }
                        tbody {
                            @for r in records.iter().rev() {
                                tr {
                                    td { (when(r.at)) }
                                    td data-label="Who" { (actor(&r.actor)) }
                                    td data-label="Action" { (action_words(&r.action)) }
                                    td data-label="Details" { (audit_detail(&r.detail)) }
                                }
                            }
                        }
                    }
                }
                (audit_pages(repo, pages))
            }
        },
    )
}

/// An audit record's detail in words: names and versions, labels,
/// expiries, what the guard let through; JSON for anything else.
fn audit_detail(d: &serde_json::Value) -> String {
    let list = |key: &str| -> Vec<String> {
        d[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| match (s["name"].as_str(), s["version"].as_i64()) {
                        (Some(n), Some(v)) => format!("{n} v{v}"),
                        (Some(n), None) => n.to_owned(),
                        _ => s.as_str().map_or_else(|| s.to_string(), str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut parts = Vec::new();
    let secrets = list("secrets");
    if !secrets.is_empty() {
        parts.push(secrets.join(", "));
    }
    if let (Some(n), Some(to), Some(v)) =
        (d["name"].as_str(), d["to"].as_i64(), d["version"].as_i64())
    {
        parts.push(format!("{n}: v{to} restored as v{v}"));
    }
    if let Some(l) = d["label"].as_str() {
        parts.push(format!("label {l}"));
    }
    if let Some(e) = d["expires"].as_i64() {
        parts.push(format!("expires {}", time(e)));
    }
    if let Some(a) = d["allowed_production"].as_array().filter(|a| !a.is_empty()) {
        let what: Vec<String> = a
            .iter()
            .map(|x| {
                let rules: Vec<&str> = x["rules"]
                    .as_array()
                    .map(|r| r.iter().filter_map(|r| r.as_str()).collect())
                    .unwrap_or_default();
                format!(
                    "{} ({})",
                    x["name"].as_str().unwrap_or("?"),
                    rules.join(", ")
                )
            })
            .collect();
        parts.push(format!(
            "production credential allowed: {}",
            what.join(", ")
        ));
    }
    let warnings = list("warnings");
    if !warnings.is_empty() {
        parts.push(format!("warnings: {}", warnings.join(", ")));
    }
    match parts.is_empty() {
        true => d.to_string(),
        false => parts.join("; "),
    }
}

/// A page that only says what went wrong and where to go.
pub fn problem(chrome: Option<&Chrome>, title: &str, message: &str, back: &str) -> Markup {
    layout(
        title,
        chrome,
        html! {
            h1 { (title) }
            p.flash.bad role="alert" { (message) }
            p { a href=(back) { "Back" } }
        },
    )
}

/// The stylesheet: one file, system fonts, light and dark.
pub const STYLESHEET: &str = include_str!("sealinit.css");

#[cfg(test)]
mod tests {
    /// A stray brace makes browsers drop the rule after it, silently.
    #[test]
    fn the_stylesheet_s_braces_balance() {
        let mut depth = 0i32;
        for (i, c) in super::STYLESHEET.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "a stray }} at byte {i}");
        }
        assert_eq!(depth, 0, "an unclosed {{");
    }
}
