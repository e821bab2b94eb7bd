//! The registry of reclaimers and the [`Reclaimer`] handle.
//!
//! Owns the list of registered reclaimers in registration order. A cycle
//! takes a copy of the list (so no lock is held while a reclaimer runs: a
//! reclaimer may register, drop reclaimers or change settings), and skips
//! entries unregistered since.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, PoisonError};

use super::Pressure;

/// A reclaimer's function.
pub(super) type ReclaimFn = Arc<dyn Fn(&Pressure) -> usize + Send + Sync + 'static>;

/// One registered reclaimer, as a cycle sees it.
#[derive(Clone)]
pub(super) struct Entry {
    id: u64,
    pub(super) name: Arc<str>,
    pub(super) f: ReclaimFn,
    active: Arc<AtomicBool>,
}

impl Entry {
    /// False once its [`Reclaimer`] was dropped.
    pub(super) fn active(&self) -> bool {
        self.active.load(Acquire)
    }
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registered reclaimer (see [`crate::gc::register_reclaimer`]). Dropping it
/// unregisters the function: no cycle that starts after the drop calls it.
#[must_use = "dropping the Reclaimer unregisters it at once"]
pub struct Reclaimer {
    id: u64,
    name: Arc<str>,
    active: Arc<AtomicBool>,
}

impl Reclaimer {
    /// The name it was registered with.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Reclaimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reclaimer")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        // Inactive first: a cycle holding a copy of the list skips it from
        // now on (it may be inside the function already).
        self.active.store(false, Release);
        registry().retain(|e| e.id != self.id);
    }
}

pub(super) fn register(name: String, f: ReclaimFn) -> Reclaimer {
    let id = NEXT_ID.fetch_add(1, Relaxed);
    let name: Arc<str> = name.into();
    let active = Arc::new(AtomicBool::new(true));
    registry().push(Entry {
        id,
        name: name.clone(),
        f,
        active: active.clone(),
    });
    Reclaimer { id, name, active }
}

/// The registered reclaimers, in registration order.
pub(super) fn snapshot() -> Vec<Entry> {
    registry().clone()
}

/// How many are registered.
pub(super) fn count() -> usize {
    registry().len()
}
