//! The page for secrets held besides a repository's (issue #27): an
//! owner's organisation secrets (`/o/{org}`), a repository's environments
//! (`/r/{repo}/env/{env}`). Thin handlers over the same service calls as
//! the API; the repository's Secrets tab lists what it receives from both.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use sealinit_store::holder::{env_key, org_key};
use serde::Deserialize;

use super::view::{self, Chrome, csrf, field_error, flash, layout, seg, value_field};
use super::{PageError, Posted, Signed, on_form, page, put_value, see_other};
use crate::input::Value;
use crate::scope::Action;
use crate::service::{self, PutFlags, SecretMeta};
use crate::session::Flash;
use crate::state::AppState;

pub fn org_href(org: &str) -> String {
    format!("/o/{}", seg(org))
}

pub fn env_href(repo: &str, env: &str) -> String {
    format!("{}/env/{}", view::repo_href(repo), seg(env))
}

/// Whose secrets a page shows, from its path (`{org}`, or `{repo}` and
/// `{env}`).
pub(super) enum Whose {
    Org(String),
    Env { repo: String, env: String },
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Whose {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, PageError> {
        let Path(mut p) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| PageError::Bad(e.body_text()))?;
        match (p.remove("org"), p.remove("repo"), p.remove("env")) {
            (Some(org), _, _) => Ok(Self::Org(org)),
            (None, Some(repo), Some(env)) => Ok(Self::Env { repo, env }),
            _ => Err(PageError::Bad("no such page".into())),
        }
    }
}

impl Whose {
    fn key(&self) -> String {
        match self {
            Self::Org(o) => org_key(o),
            Self::Env { repo, env } => env_key(repo, env),
        }
    }

    fn href(&self) -> String {
        match self {
            Self::Org(o) => org_href(o),
            Self::Env { repo, env } => env_href(repo, env),
        }
    }

    fn title(&self) -> String {
        match self {
            Self::Org(o) => format!("Organisation secrets of {o}"),
            Self::Env { repo, env } => format!("Environment {env} of {repo}"),
        }
    }
}

/// A form's URL opened with GET: its page.
pub(super) async fn to_page(whose: Whose) -> Response {
    see_other(&whose.href())
}

/// An organisation's or an environment's page.
pub(super) async fn show(
    State(s): State<AppState>,
    signed: Signed,
    whose: Whose,
) -> Result<Response, PageError> {
    let key = whose.key();
    let k = key.clone();
    let (list, caller) = signed
        .run(&s, move |st, c| {
            service::list_secrets(st, c, &k, 1, usize::MAX)
        })
        .await?;
    let can_write = caller.grants.allows(Action::Write, &key);
    let flash_msg = signed.take_flash().await;
    Ok(page(
        StatusCode::OK,
        holder_page(
            &signed.chrome(&caller),
            flash_msg.as_ref(),
            &whose,
            &list.secrets,
            can_write,
        ),
    ))
}

#[derive(Deserialize)]
pub(super) struct OpenEnv {
    env: Option<String>,
}

/// "Open an environment" (a GET form): to its page.
pub(super) async fn open_env(Path(repo): Path<String>, Query(q): Query<OpenEnv>) -> Response {
    match q.env.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        Some(env) => see_other(&env_href(&repo, env)),
        None => see_other(&view::repo_href(&repo)),
    }
}

#[derive(Deserialize)]
pub(super) struct HolderAddForm {
    pub(super) csrf: Option<String>,
    name: Option<String>,
    value: Option<Value>,
    visibility: Option<String>,
    repositories: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct HolderDeleteForm {
    pub(super) csrf: Option<String>,
    name: Option<String>,
}

pub(super) async fn add(
    State(s): State<AppState>,
    whose: Whose,
    Posted { signed, form: f }: Posted<HolderAddForm>,
) -> Result<Response, PageError> {
    let name = f.name.unwrap_or_default();
    let repos = match &whose {
        Whose::Org(_) => {
            let listed = f
                .repositories
                .as_deref()
                .map(super::host_list)
                .filter(|l| !l.is_empty());
            service::reach(f.visibility.as_deref(), listed).map_err(PageError::Api)?
        }
        Whose::Env { .. } => None,
    };
    let flags = PutFlags {
        route: sealinit_store::RouteChange {
            repos,
            ..Default::default()
        },
        ..Default::default()
    };
    match put_value(&s, &signed, &whose.key(), &name, f.value, flags).await {
        Ok(done) => {
            let what = if done.created { "Added" } else { "Updated" };
            signed.flash(true, format!("{what} {name}.")).await;
        }
        Err(e) => {
            let e = on_form(e)?;
            signed.flash(false, super::words::say(&e)).await;
        }
    }
    Ok(see_other(&whose.href()))
}

pub(super) async fn delete(
    State(s): State<AppState>,
    whose: Whose,
    Posted { signed, form: f }: Posted<HolderDeleteForm>,
) -> Result<Response, PageError> {
    let (key, name) = (whose.key(), f.name.unwrap_or_default());
    let n = name.clone();
    let done = signed
        .run(&s, move |st, c| service::delete_secret(st, c, &key, &n))
        .await;
    match done {
        Ok(_) => signed.flash(true, format!("Deleted {name}.")).await,
        Err(e) => {
            let e = on_form(e)?;
            signed.flash(false, super::words::say(&e)).await;
        }
    }
    Ok(see_other(&whose.href()))
}

/// How far an organisation secret reaches, in words.
fn reach(m: &SecretMeta) -> String {
    match &m.selected_repositories {
        Some(l) if l.is_empty() => "no repository".into(),
        Some(l) => format!("selected: {}", l.join(", ")),
        None => "all repositories".into(),
    }
}

fn holder_page(
    chrome: &Chrome,
    flash_msg: Option<&Flash>,
    whose: &Whose,
    secrets: &[SecretMeta],
    can_write: bool,
) -> Markup {
    let title = whose.title();
    let org = matches!(whose, Whose::Org(_));
    layout(
        &view::titled(&title, flash_msg),
        Some(chrome),
        html! {
            nav.crumbs aria-label="Breadcrumb" {
                a href="/" { "Repositories" }
                " / "
                @match whose {
                    Whose::Org(o) => { span aria-current="page" { (o) " (organisation)" } }
                    Whose::Env { repo, env } => {
                        a href=(view::repo_href(repo)) { (repo) } " / "
                        span aria-current="page" { "environment " (env) }
                    }
                }
            }
            h1 { (title) }
            (flash(flash_msg))
            @match whose {
                Whose::Org(o) => p.hint { "Every repository of " (o) " receives these, or those selected; a repository's own secret of the same name wins." }
                Whose::Env { env, .. } => p.hint { "A launch that names " (env) " gets these over the repository's own (sealctl run --environment " (env) ")." }
            }
            @if secrets.is_empty() {
                p.empty { "No secrets here yet." }
            } @else {
                div.rows {
                    table {
                        caption.sr { (title) }
                        thead { tr {
                            th scope="col" { "Name" }
                            @if org { th scope="col" { "Reaches" } }
                            th scope="col" { "Updated" }
                            @if can_write { th scope="col" { "Delete" } }
                        } }
                        tbody {
                            @for s in secrets {
                                tr {
                                    td { code { (s.name) } }
                                    @if org { td data-label="Reaches" { (reach(s)) } }
                                    td data-label="Updated" { (view::when_rfc(&s.updated_at)) }
                                    @if can_write {
                                        td.action {
                                            form method="post" action=(format!("{}/delete", whose.href())) {
                                                (csrf(&chrome.csrf))
                                                input type="hidden" name="name" value=(s.name);
                                                button.danger type="submit" aria-label=(format!("Delete {}", s.name)) { "Delete" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if can_write {
                section aria-labelledby="add" {
                h2 #add { "Add secret" }
                form.card method="post" action=(format!("{}/add", whose.href())) {
                    (csrf(&chrome.csrf))
                    label for="add-name" { "Name" }
                    input #add-name type="text" name="name" required
                        pattern="[A-Za-z_][A-Za-z0-9_]*" autocomplete="off" autocapitalize="off"
                        spellcheck="false" aria-describedby="add-name-hint";
                    p.hint #add-name-hint { "Letters, digits and _, not starting with a digit: API_KEY. An existing name gets a new version." }
                    (value_field("add-value", "Value", None, false))
                    @if org {
                        label for="add-visibility" { "Reaches" }
                        select #add-visibility name="visibility" {
                            option value="all" { "All repositories of the organisation" }
                            option value="selected" { "Selected repositories" }
                        }
                        label for="add-repositories" { "Selected repositories" }
                        textarea #add-repositories name="repositories" rows="2" autocomplete="off"
                            autocapitalize="off" spellcheck="false" aria-describedby="add-repositories-hint" {}
                        p.hint #add-repositories-hint { "With Selected: one per line, owner/name." }
                        (field_error("add-repositories-error", None))
                    }
                    div.actions { button type="submit" { "Add secret" } }
                }
                }
            }
        },
    )
}

/// On a repository's Secrets tab: the organisation secrets it receives
/// and its environments.
pub fn received(repo: &str, from_org: &[SecretMeta], environments: &[(String, usize)]) -> Markup {
    let owner = sealinit_store::holder::owner_of(repo);
    html! {
        section aria-labelledby="from-org" {
            h2 #from-org { "From the organisation" }
            @if from_org.is_empty() {
                p.empty { "This repository receives no organisation secret of " (owner) "." }
            } @else {
                div.rows {
                    table {
                        caption.sr { "Organisation secrets " (repo) " receives" }
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Reaches" } th scope="col" { "Updated" } } }
                        tbody {
                            @for s in from_org {
                                tr {
                                    td { code { (s.name) } }
                                    td data-label="Reaches" { (reach(s)) }
                                    td data-label="Updated" { (view::when_rfc(&s.updated_at)) }
                                }
                            }
                        }
                    }
                }
            }
            p { a href=(org_href(owner)) { "Organisation secrets of " (owner) } }
        }
        section aria-labelledby="environments" {
            h2 #environments { "Environments" }
            @if environments.is_empty() {
                p.empty { "No environment of " (repo) " holds secrets yet." }
            } @else {
                ul {
                    @for (env, n) in environments {
                        li { a href=(env_href(repo, env)) { (env) } " (" (n) (if *n == 1 { " secret" } else { " secrets" }) ")" }
                    }
                }
            }
            form.inline method="get" action=(format!("{}/env", view::repo_href(repo))) {
                label for="open-env" { "Open an environment" }
                input #open-env type="text" name="env" required pattern="[A-Za-z0-9._-]+"
                    autocomplete="off" autocapitalize="off" spellcheck="false" placeholder="staging";
                button type="submit" { "Open" }
            }
        }
    }
}
