//! A database of its own for each test, on the PostgreSQL server `scripts/test` starts.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's connection string, without a database: `TOLLGATE_TEST_POSTGRES`.
pub fn server() -> String {
    super::server_env("TOLLGATE_TEST_POSTGRES")
}

/// The connection string of database `db` on the test server.
pub fn url(db: &str) -> String {
    format!("{} dbname={db}", server())
}

/// Creates an empty database named after `name` (and this process, and a counter), and returns
/// its name.
pub async fn database(name: &str) -> String {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let db = format!("tollgate_{name}_{}_{n}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&server(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test PostgreSQL server at {}: {e}",
                server()
            )
        });
    let driver = tokio::spawn(connection);
    for statement in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .expect("create a test database");
    }
    drop(client);
    let _ = driver.await;
    db
}
