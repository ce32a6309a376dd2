//! Stores for the async handlers: the store is blocking (rusqlite, the
//! synchronous PostgreSQL client), so each call takes one open store from
//! the pool and runs on tokio's blocking threads: the one `spawn_blocking`
//! helper, as vaultwarden's `run_blocking`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealinit_store::{MasterKey, Store};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Reads the master keys again from the files and directories the server
/// was started with.
#[derive(Clone)]
pub struct KeyringReload(pub Arc<dyn Fn() -> Result<Vec<MasterKey>, String> + Send + Sync>);

impl std::fmt::Debug for KeyringReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyringReload")
    }
}

pub struct StorePool {
    /// Each store with the keyring generation it has loaded.
    stores: Mutex<Vec<(Store, u64)>>,
    permits: Semaphore,
    reload: Option<KeyringReload>,
    /// Bumped by SIGHUP and by a request that found a master key missing:
    /// each store reloads its keyring before its next request.
    generation: AtomicU64,
    last_bump: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for StorePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePool")
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl Drop for StorePool {
    /// The PostgreSQL client owns a runtime of its own, which may not be
    /// dropped inside tokio's: the stores go on a plain thread.
    fn drop(&mut self) {
        let stores = std::mem::take(self.stores.get_mut().unwrap_or_else(|e| e.into_inner()));
        let _ = std::thread::spawn(move || drop(stores)).join();
    }
}

impl StorePool {
    pub fn new(stores: Vec<Store>, reload: Option<KeyringReload>) -> Arc<Self> {
        let n = stores.len();
        Arc::new(Self {
            stores: Mutex::new(stores.into_iter().map(|s| (s, 0)).collect()),
            permits: Semaphore::new(n),
            reload,
            generation: AtomicU64::new(0),
            last_bump: Mutex::new(None),
        })
    }

    /// Makes every store reload its keyring before its next request
    /// (SIGHUP).
    pub fn reload_keyring(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Reloads the keyring if `result` says a master key is missing (a
    /// call whose operation result is nested reports it itself).
    pub fn notice<T>(&self, result: &Result<T, ApiError>) {
        if matches!(result, Err(e) if e.code == crate::error::MASTER_KEY_UNAVAILABLE) {
            self.key_missing();
        }
    }

    /// A request needed a master key this server does not hold: reload, at
    /// most once a second however many requests find it missing.
    fn key_missing(&self) {
        if let Ok(mut last) = self.last_bump.lock() {
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                self.reload_keyring();
            }
        }
    }

    /// Runs `f` on a store of the pool, as `actor`, on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, actor: String, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal())?;
        let (mut store, mut loaded) = self
            .stores
            .lock()
            .map_err(|_| ApiError::internal())?
            .pop()
            .ok_or_else(ApiError::internal)?;
        let pool = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let current = pool.generation.load(Ordering::SeqCst);
            if loaded < current {
                loaded = current;
                pool.reload_into(&mut store);
            }
            store.set_actor(actor);
            let result = f(&mut store);
            pool.notice(&result);
            if let Ok(mut stores) = pool.stores.lock() {
                stores.push((store, loaded));
            }
            result
        })
        .await;
        match joined {
            Ok(result) => result,
            // A panic lost that store; the pool goes on with one fewer
            // permit's worth of stores (its permit is gone with it).
            Err(_) => {
                _permit.forget();
                Err(ApiError::internal())
            }
        }
    }

    /// Reads the keyring's files again and gives `store` the keys it
    /// lacks; a failure leaves it with the keys it has.
    fn reload_into(&self, store: &mut Store) {
        let Some(reload) = &self.reload else {
            return;
        };
        match (reload.0)().map(|keys| store.add_keys(keys)) {
            Ok(Ok(added)) if !added.is_empty() => {
                tracing::info!("keyring reloaded: added master key(s) {}", added.join(", "));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("keyring reload: {e}; keeping the keys held"),
            Err(e) => tracing::warn!("keyring reload: {e}; keeping the keys held"),
        }
    }
}
