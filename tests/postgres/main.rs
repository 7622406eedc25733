//! `PostgresStore` on a real PostgreSQL server: the conformance suite, and replicas of a gate
//! sharing one database.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use tollgate::store::{PostgresOptions, PostgresStore, conformance};

use support::postgres::{database, url};

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

fn options(instance: &str) -> PostgresOptions {
    PostgresOptions::new()
        .instance(instance)
        .rescan(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    // Each store is an instance named after its database, so reopening finds both again.
    let open =
        |db: &str| block(PostgresStore::connect_with(&url(db), options(db))).expect("connect");
    conformance::run(
        || open(&block(database("conformance"))),
        |store| open(store.instance()),
    )
    .await;
}
