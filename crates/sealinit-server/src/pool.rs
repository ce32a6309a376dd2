//! Stores for the async handlers: the store is blocking (rusqlite, the
//! synchronous PostgreSQL client), so each call takes one open store from
//! the pool and runs on tokio's blocking threads: the one `spawn_blocking`
//! helper, as vaultwarden's `run_blocking`.

use std::sync::{Arc, Mutex};

use sealinit_store::Store;
use tokio::sync::Semaphore;

use crate::error::ApiError;

pub struct StorePool {
    stores: Mutex<Vec<Store>>,
    permits: Semaphore,
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
    pub fn new(stores: Vec<Store>) -> Arc<Self> {
        let n = stores.len();
        Arc::new(Self {
            stores: Mutex::new(stores),
            permits: Semaphore::new(n),
        })
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
        let mut store = self
            .stores
            .lock()
            .map_err(|_| ApiError::internal())?
            .pop()
            .ok_or_else(ApiError::internal)?;
        let pool = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            store.set_actor(actor);
            let result = f(&mut store);
            if let Ok(mut stores) = pool.stores.lock() {
                stores.push(store);
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
}
