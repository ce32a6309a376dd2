//! A repository's pages: the Repositories list, the Secrets tab (its
//! listing, Add, Import, the egress policy) and the Audit tab.

use super::*;

/// The Repositories page, with what a failed "New repository" form left.
pub(super) async fn render_repos(
    s: &AppState,
    signed: &Signed,
    status: StatusCode,
    new: &view::NewRepo<'_>,
) -> Result<Response, PageError> {
    let (repos, caller) = signed.run(s, service::repos).await?;
    let (flash, returned) = signed.take_result().await;
    let new = match &returned {
        Some(r) => &view::NewRepo {
            name: r.draft.as_ref().map_or("", |d| d.name.as_str()),
            error: r.error.name.as_deref(),
            ..Default::default()
        },
        None => new,
    };
    Ok(page(
        status,
        view::repos(&signed.chrome(&caller), flash.as_ref(), &repos, new),
    ))
}

#[derive(Deserialize)]
pub(super) struct NewRepoForm {
    pub(super) csrf: Option<String>,
    pub(super) name: Option<String>,
}

pub(super) async fn new_repo(
    State(s): State<AppState>,
    Posted { signed, form: f }: Posted<NewRepoForm>,
) -> Result<Response, PageError> {
    let name = f.name.unwrap_or_default().trim().to_owned();
    let n = name.clone();
    match signed
        .run(&s, move |st, c| service::create_repo(st, c, &n))
        .await
    {
        Ok((repo, _)) => {
            signed
                .flash(true, format!("Created {repo}. Add its secrets below."))
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
        Err(e) => {
            let e = on_form(e)?;
            let message = match e.code {
                "conflict" => format!("{name} already exists: open it from the table."),
                _ => e.message,
            };
            signed
                .refuse(Returned {
                    error: FormError::name(message),
                    draft: Some(view::AddDraft {
                        name,
                        ..Default::default()
                    }),
                })
                .await;
            Ok(see_other("/"))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct OpenQuery {
    pub(super) repo: Option<String>,
}

/// "Open a repository": one of those the token may see (any case), or
/// the Repositories page saying it is not one of them.
pub(super) async fn open_repo(
    State(s): State<AppState>,
    signed: Signed,
    Query(q): Query<OpenQuery>,
) -> Result<Response, PageError> {
    let typed = q
        .repo
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if typed.is_empty() {
        return Ok(see_other("/"));
    }
    let (repos, _) = signed.run(&s, service::repos).await?;
    if let Some(r) = repos.iter().find(|r| r.repo.eq_ignore_ascii_case(&typed)) {
        return Ok(see_other(&view::repo_href(&r.repo)));
    }
    let message = format!(
        "{typed} is not one of your repositories. Check its name, or create it under New repository."
    );
    let new = view::NewRepo {
        open: &typed,
        open_error: Some(&message),
        ..Default::default()
    };
    render_repos(&s, &signed, StatusCode::NOT_FOUND, &new).await
}

/// The Secrets tab, with what a failed form left (never a value).
/// What the Secrets tab lists: names containing `q` (any case), a page of
/// [`view::PER_PAGE`] at a time.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Listing {
    pub(super) q: Option<String>,
    pub(super) page: Option<usize>,
}

/// What a refused form on the Secrets tab sent back to it: what the user
/// typed (never a stored value) and what was wrong.
#[derive(Default)]
pub(super) struct Refused {
    pub(super) add: view::AddDraft,
    pub(super) add_error: FormError,
    /// Pasted .env text, in a buffer wiped on drop.
    pub(super) import_text: Option<SecretValue>,
    pub(super) import_error: FormError,
}

/// The Secrets tab answering a refused import (its text cannot go
/// through the session: it holds values).
pub(super) async fn render_tab(
    s: &AppState,
    signed: &Signed,
    repo: String,
    status: StatusCode,
    refused: Refused,
) -> Result<Response, PageError> {
    render_listing(s, signed, repo, status, Some(refused), Listing::default()).await
}

/// The Secrets tab: a page of its listing, with what a refused form left
/// (`refused`, or given back through the session).
pub(super) async fn render_listing(
    s: &AppState,
    signed: &Signed,
    repo: String,
    status: StatusCode,
    refused: Option<Refused>,
    listing: Listing,
) -> Result<Response, PageError> {
    let r = repo.clone();
    let ((list, egress, from_org, environments, deleted, repo), caller) = signed
        .run(s, move |st, c| {
            let list = service::list_secrets(st, c, &r, 1, usize::MAX)?;
            let from_org = service::received(st, c, &r)?;
            let environments = service::environments(st, c, &r)?;
            let deleted = service::deleted(st, c, &r)?;
            // Shown as stored, whatever case the address has.
            let stored = st.existing(&r)?;
            Ok((
                list,
                service::egress(st, c, &r)?,
                from_org,
                environments,
                deleted,
                stored,
            ))
        })
        .await?;
    let can_write = caller.grants.allows(Action::Write, &repo);
    let q = listing.q.as_deref().map(str::trim).unwrap_or("");
    let needle = q.to_ascii_lowercase();
    let matched: Vec<service::SecretMeta> = list
        .secrets
        .into_iter()
        .filter(|m| m.name.to_ascii_lowercase().contains(&needle))
        .collect();
    let pages = matched.len().div_ceil(view::PER_PAGE).max(1);
    let page_no = listing.page.unwrap_or(1).clamp(1, pages);
    let shown =
        &matched[(page_no - 1) * view::PER_PAGE..matched.len().min(page_no * view::PER_PAGE)];
    let (flash, refused) = match refused {
        Some(r) => (None, r),
        None => match signed.take_result().await {
            (f, Some(r)) => (
                f,
                Refused {
                    add: r.draft.unwrap_or_default(),
                    add_error: r.error,
                    ..Refused::default()
                },
            ),
            (f, None) => (f, Refused::default()),
        },
    };
    // Borrowed from the pasted text (a copy only if it is not UTF-8).
    let import_text = refused
        .import_text
        .as_ref()
        .map(|v| String::from_utf8_lossy(v.expose()))
        .unwrap_or_default();
    let tab = view::SecretsTab {
        repo: &repo,
        secrets: shown,
        total: list.total_count,
        matched: matched.len(),
        page: page_no,
        pages,
        q,
        can_write,
        can_audit: caller.grants.allows(Action::Audit, &repo),
        add: &refused.add,
        add_error: refused.add_error,
        import_text: &import_text,
        import_error: refused.import_error,
        egress: can_write.then_some(&egress),
        from_org: &from_org,
        environments: &environments,
        deleted: &deleted,
    };
    Ok(page(
        status,
        view::secrets_tab(&signed.chrome(&caller), flash.as_ref(), &tab),
    ))
}

#[derive(Deserialize)]
pub(super) struct EgressForm {
    pub(super) csrf: Option<String>,
    pub(super) default: Option<String>,
    pub(super) allow: Option<String>,
}

pub(super) async fn set_egress(
    State(s): State<AppState>,
    Path(repo): Path<String>,
    Posted { signed, form: f }: Posted<EgressForm>,
) -> Result<Response, PageError> {
    use sealinit_core::bundle::{Egress, EgressDefault};
    let policy = Egress {
        default: match f.default.as_deref() {
            Some("deny") => EgressDefault::Deny,
            _ => EgressDefault::Allow,
        },
        allow: host_list(f.allow.as_deref().unwrap_or_default()),
    };
    let r = repo.clone();
    let done = signed
        .run(&s, move |st, c| service::set_egress(st, c, &r, policy))
        .await;
    match done {
        Ok(_) => signed.flash(true, "Egress policy saved.".into()).await,
        Err(e) => {
            let e = on_form(e)?;
            signed.flash(false, words::say(&e)).await;
        }
    }
    Ok(see_other(&view::repo_href(&repo)))
}

pub(super) async fn secrets_tab(
    State(s): State<AppState>,
    signed: Signed,
    Path(repo): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Response, PageError> {
    render_listing(&s, &signed, repo, StatusCode::OK, None, listing).await
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    pub(super) csrf: Option<String>,
    pub(super) name: Option<String>,
    pub(super) value: Option<Value>,
    /// The name the user lets through the guard (a box shown after a
    /// refusal names it).
    pub(super) allow_production: Option<String>,
    pub(super) allow_empty: Option<String>,
    pub(super) delivery: Option<String>,
    pub(super) hosts: Option<String>,
    pub(super) in_body: Option<String>,
}

pub(super) async fn add(
    State(s): State<AppState>,
    Path(repo): Path<String>,
    Posted { signed, form: f }: Posted<AddForm>,
) -> Result<Response, PageError> {
    let name = f.name.unwrap_or_default().trim().to_owned();
    let fields = ValueFields {
        allow_production: f.allow_production.as_deref(),
        allow_empty: ticked(&f.allow_empty),
        delivery: f.delivery.as_deref(),
        hosts: f.hosts.as_deref(),
        in_body: f.in_body.as_deref(),
    };
    // Add never replaces: an existing name is updated from its page.
    let (flags, draft) = fields.flags(&name, 0)?;
    let draft = draft.unwrap_or_else(|| view::AddDraft {
        name: name.clone(),
        ..Default::default()
    });
    let outcome = put_value(&s, &signed, &repo, &name, f.value, flags).await;
    match outcome {
        Ok(done) => {
            signed
                .flash(
                    true,
                    format!(
                        "Added {} (version {}).{}",
                        done.name,
                        done.version,
                        notes(std::slice::from_ref(&done))
                    ),
                )
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
        Err(e) => {
            let e = on_form(e)?;
            let mut err = FormError::from_api(&e);
            if e.status == StatusCode::PRECONDITION_FAILED {
                err = FormError::name(format!(
                    "{name} already exists: open it from the table to update it."
                ));
            }
            signed
                .refuse(Returned {
                    error: err,
                    draft: Some(draft),
                })
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
    }
}

pub(super) async fn import(
    State(s): State<AppState>,
    signed: Signed,
    Path(repo): Path<String>,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, PageError> {
    let mut mp =
        mp.map_err(|e| PageError::Bad(format!("this form could not be read: {}", e.body_text())))?;
    let mut csrf = None;
    let mut allow = Vec::new();
    // The text, pasted or uploaded, in buffers wiped on drop.
    let mut pasted = Zeroizing::new(Vec::new());
    let mut uploaded = Zeroizing::new(Vec::new());
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| PageError::Bad(format!("this form could not be read: {}", e.body_text())))?
    {
        let into = match field.name() {
            Some("csrf") => {
                csrf = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| PageError::Bad(e.body_text()))?,
                );
                continue;
            }
            Some("allow_production") => {
                allow.push(
                    field
                        .text()
                        .await
                        .map_err(|e| PageError::Bad(e.body_text()))?,
                );
                continue;
            }
            Some("content") => &mut pasted,
            Some("file") => &mut uploaded,
            _ => continue,
        };
        while let Some(chunk) = field.chunk().await.map_err(|e| {
            PageError::Bad(format!("this form could not be read: {}", e.body_text()))
        })? {
            append_wiped(into, &chunk);
        }
    }
    signed.check(csrf.as_deref())?;
    // Whether the text was pasted or uploaded. Pasted text is what the
    // user typed: given back after a refusal, so that "line 3" points at
    // text they still have.
    let typed = match (pasted.is_empty(), uploaded.is_empty()) {
        (false, true) => Ok(true),
        (true, false) => Ok(false),
        (true, true) => Err("Paste a .env file, or choose one to upload."),
        (false, false) => Err("Paste a .env file or upload one, not both: nothing was changed."),
    };
    let typed = match typed {
        Ok(typed) => typed,
        Err(m) => {
            let refused = Refused {
                import_text: Some(SecretValue::from(std::mem::take(&mut *pasted))),
                import_error: FormError::form(m),
                ..Refused::default()
            };
            return render_tab(&s, &signed, repo, StatusCode::UNPROCESSABLE_ENTITY, refused).await;
        }
    };
    let mut text = if typed { pasted } else { uploaded };
    let content = new_value(
        signed.peer,
        Some(Value(SecretValue::from(std::mem::take(&mut *text))).with_lf()),
        None,
        None,
        "content",
    );
    // The text comes back from the store's thread with the result: a
    // refusal gives back what the user pasted, with no copy made of it.
    let (outcome, content) = match content {
        Ok(content) => {
            let r = repo.clone();
            let ran = signed
                .run(&s, move |st, c| {
                    let done = service::import(
                        st,
                        c,
                        &r,
                        service::Format::Env { expand: false },
                        &content,
                        service::ImportOptions {
                            allow: service::AllowProduction::Names(allow),
                            ..Default::default()
                        },
                    );
                    Ok((done, content))
                })
                .await;
            match ran {
                Ok(((done, content), _)) => (done.map_err(PageError::Api), Some(content)),
                Err(e) => (Err(e), None),
            }
        }
        Err(e) => (Err(PageError::Api(e)), None),
    };
    match outcome {
        Ok(done) => {
            let names: Vec<&str> = done.iter().map(|d| d.name.as_str()).collect();
            signed
                .flash(
                    true,
                    format!(
                        "Imported {} secret(s): {}.{}",
                        done.len(),
                        names.join(", "),
                        notes(&done)
                    ),
                )
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
        Err(e) => {
            let e = on_form(e)?;
            let mut err = FormError::from_api(&e);
            // One message for the whole text, next to it.
            let all: Vec<String> = err.messages().map(words::import_words).collect();
            (err.name, err.value, err.form) = (None, None, Some(all.join(" ")));
            let refused = Refused {
                import_text: match content {
                    Some(service::NewValue::Plain(v)) if typed => Some(v),
                    _ => None,
                },
                import_error: err,
                ..Refused::default()
            };
            render_tab(&s, &signed, repo, e.status, refused).await
        }
    }
}

/// Appends to a buffer that is wiped on drop, wiping what a growth leaves
/// behind (`Vec`'s own growth would free the old bytes as they are).
pub(super) fn append_wiped(buf: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    if buf.capacity() - buf.len() < more.len() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            (buf.len() + more.len()).max(buf.capacity() * 2),
        ));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(more);
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditPageQuery {
    pub(super) page: Option<usize>,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    signed: Signed,
    Path(repo): Path<String>,
    Query(q): Query<AuditPageQuery>,
) -> Result<Response, PageError> {
    let r = repo.clone();
    let page_no = q.page.unwrap_or(1).max(1);
    let ((records, total), caller) = signed
        .run(&s, move |st, c| {
            service::audit_recent(st, c, &r, view::AUDIT_PER_PAGE, page_no)
        })
        .await?;
    let pages = total.div_ceil(view::AUDIT_PER_PAGE).max(1);
    Ok(page(
        StatusCode::OK,
        view::audit(
            &signed.chrome(&caller),
            &repo,
            &records,
            (page_no.min(pages), pages),
        ),
    ))
}
