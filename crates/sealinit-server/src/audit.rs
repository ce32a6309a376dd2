//! Group commit of the audit records of minted bundles: one thread with a
//! store of its own takes every record waiting, commits them in one
//! transaction (one fsync on SQLite), then answers each waiter. A mint
//! responds only after its record is committed; under load many mints
//! share a commit, so the disk's flush rate no longer bounds the rate of
//! mints.

use std::sync::Arc;

use sealinit_store::{AuditRecord, Store};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

type Job = (AuditRecord, oneshot::Sender<Result<(), String>>);

#[derive(Debug)]
pub struct AuditWriter {
    jobs: mpsc::Sender<Job>,
}

/// The most records committed at once.
const BATCH: usize = 1024;

impl AuditWriter {
    pub fn start(mut store: Store) -> Arc<Self> {
        let (jobs, mut rx) = mpsc::channel::<Job>(4 * BATCH);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let records: Vec<AuditRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
                    let result = store.append_audit(&records).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!("audit records not committed: {e}");
                    }
                    for (_, done) in batch {
                        let _ = done.send(result.clone());
                    }
                }
                // The store is dropped here, on a plain thread.
            })
            .expect("spawning the audit writer");
        Arc::new(Self { jobs })
    }

    /// Commits `record`; returns once it is durable.
    pub async fn append(&self, record: AuditRecord) -> Result<(), ApiError> {
        let (done, committed) = oneshot::channel();
        let unavailable = || {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the audit record could not be committed; nothing was handed out; retry",
            )
        };
        self.jobs
            .send((record, done))
            .await
            .map_err(|_| unavailable())?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(unavailable()),
        }
    }
}
