//! A secret's page: its facts and history, Update, Roll back, Delete and
//! Restore.

use super::*;

pub(super) async fn render_secret(
    s: &AppState,
    signed: &Signed,
    repo: String,
    name: String,
    status: StatusCode,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    let ((meta, history, restored), caller) = signed
        .run(s, move |st, c| {
            let meta = service::get_secret(st, c, &r, &n)?;
            let history = service::versions(st, c, &r, &n)?;
            let since = history.first().map_or(0, |h| h.at);
            let restored = service::restored_from(st, c, &r, &n, since)?;
            Ok((meta, history, restored))
        })
        .await?;
    let (flash, returned) = signed.take_result().await;
    let (error, draft) = match returned {
        Some(r) => (r.error, r.draft),
        None => (FormError::default(), None),
    };
    let v = view::SecretView {
        repo: &repo,
        meta: &meta,
        history: &history,
        restored: &restored,
        can_write: caller.grants.allows(Action::Write, &repo),
        can_audit: caller.grants.allows(Action::Audit, &repo),
        error,
        draft: draft.as_ref(),
    };
    Ok(page(
        status,
        view::secret(&signed.chrome(&caller), flash.as_ref(), &v),
    ))
}

pub(super) async fn secret(
    State(s): State<AppState>,
    signed: Signed,
    Path((repo, name)): Path<(String, String)>,
) -> Result<Response, PageError> {
    render_secret(&s, &signed, repo, name, StatusCode::OK).await
}

/// Its value-form fields repeat `AddForm`'s rather than sharing a
/// `#[serde(flatten)]` part: flattening buffers every field first, the
/// value included, in serde's own (never wiped) strings.
#[derive(Deserialize)]
pub(super) struct UpdateForm {
    pub(super) csrf: Option<String>,
    pub(super) value: Option<Value>,
    pub(super) if_version: Option<i64>,
    pub(super) allow_production: Option<String>,
    pub(super) allow_empty: Option<String>,
    pub(super) delivery: Option<String>,
    pub(super) hosts: Option<String>,
    pub(super) in_body: Option<String>,
}

pub(super) async fn update(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, form: f }: Posted<UpdateForm>,
) -> Result<Response, PageError> {
    let Some(if_version) = f.if_version.filter(|v| *v > 0) else {
        return Err(PageError::Bad(
            "the form lacks the version it updates; reload the page".into(),
        ));
    };
    let fields = ValueFields {
        allow_production: f.allow_production.as_deref(),
        allow_empty: ticked(&f.allow_empty),
        delivery: f.delivery.as_deref(),
        hosts: f.hosts.as_deref(),
        in_body: f.in_body.as_deref(),
    };
    let (flags, draft) = fields.flags(&name, if_version)?;
    let outcome = put_value(&s, &signed, &repo, &name, f.value, flags).await;
    match outcome {
        Ok(done) => {
            signed
                .flash(
                    true,
                    format!(
                        "Updated {}: now version {}.{}",
                        done.name,
                        done.version,
                        notes(std::slice::from_ref(&done))
                    ),
                )
                .await;
            Ok(see_other(&view::secret_href(&repo, &name)))
        }
        Err(e) => {
            let e = on_form(e)?;
            signed
                .refuse(Returned {
                    error: FormError::from_api(&e),
                    draft,
                })
                .await;
            Ok(see_other(&view::secret_href(&repo, &name)))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RollbackForm {
    pub(super) csrf: Option<String>,
    pub(super) to: Option<i64>,
}

pub(super) async fn rollback(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, form: f }: Posted<RollbackForm>,
) -> Result<Response, PageError> {
    let Some(to) = f.to else {
        return Err(PageError::Bad(
            "the form lacks the version to roll back to".into(),
        ));
    };
    let (r, n) = (repo.clone(), name.clone());
    match signed
        .run(&s, move |st, c| service::rollback(st, c, &r, &n, to))
        .await
    {
        Ok((done, _)) => {
            signed
                .flash(
                    true,
                    format!(
                        "Rolled {} back to version {to}: its value is now version {}.",
                        done.name, done.version
                    ),
                )
                .await
        }
        Err(e) => {
            let e = on_form(e)?;
            signed
                .flash(false, format!("Not rolled back: {}", words::say(&e)))
                .await;
        }
    }
    Ok(see_other(&view::secret_href(&repo, &name)))
}

pub(super) async fn confirm_delete(
    State(s): State<AppState>,
    signed: Signed,
    Path((repo, name)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    let (_, caller) = signed
        .run(&s, move |st, c| {
            c.require(Action::Write, &r)?;
            service::get_secret(st, c, &r, &n)
        })
        .await?;
    Ok(page(
        StatusCode::OK,
        view::confirm_delete(&signed.chrome(&caller), &repo, &name),
    ))
}

pub(super) async fn delete(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, .. }: Posted<CsrfOnly>,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    signed
        .run(&s, move |st, c| service::delete_secret(st, c, &r, &n))
        .await?;
    signed
        .flash_with(Flash {
            ok: true,
            text: format!("Deleted {name}."),
            restore: Some(name),
            refused: None,
        })
        .await;
    Ok(see_other(&view::repo_href(&repo)))
}

/// Brings a deleted secret back (a roll back to its last value).
pub(super) async fn restore(
    State(s): State<AppState>,
    Path((repo, name)): Path<(String, String)>,
    Posted { signed, .. }: Posted<CsrfOnly>,
) -> Result<Response, PageError> {
    let (r, n) = (repo.clone(), name.clone());
    match signed
        .run(&s, move |st, c| service::restore(st, c, &r, &n))
        .await
    {
        Ok(((done, from), _)) => {
            signed
                .flash(
                    true,
                    format!(
                        "Restored {name}: version {} has the value of version {from}.",
                        done.version
                    ),
                )
                .await;
            Ok(see_other(&view::secret_href(&repo, &name)))
        }
        Err(e) => {
            let e = on_form(e)?;
            signed
                .flash(false, format!("Not restored: {}", words::say(&e)))
                .await;
            Ok(see_other(&view::repo_href(&repo)))
        }
    }
}
