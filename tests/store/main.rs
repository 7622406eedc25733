//! The store conformance suite, run against every store tollgate ships.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use tollgate::store::{MemoryStore, SqliteStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run(MemoryStore::new, MemoryStore::clone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = TempDir::new("conformance");
    let made = AtomicUsize::new(0);
    conformance::run(
        || {
            let n = made.fetch_add(1, Ordering::Relaxed);
            SqliteStore::open(dir.path.join(format!("{n}.db"))).unwrap()
        },
        |store| SqliteStore::open(store.path()).unwrap(),
    )
    .await;
}

/// A directory under `target/`, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
