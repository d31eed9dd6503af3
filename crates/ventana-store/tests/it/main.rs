//! The stores' conformance suite.
//!
//! Each case is an `async fn` over `&dyn RelayStore`, `&dyn EndpointStore` or
//! `&dyn GatewayStore`, so every backend runs the same cases: a backend adds one line per
//! store (`relay_cases!(postgres, crate::postgres_relay)`) and a function opening a fresh store.
//! Cases that depend on a backend's files (reopening) sit beside them as plain tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use ventana_core::{MessageId, PhoneNumber, WabaId};
use ventana_store::sqlite::{SqliteEndpointStore, SqliteRelayStore};

/// Declares a module named after a backend with one `#[tokio::test]` per case; each opens a
/// fresh store with `$open` and runs the case against it.
macro_rules! conformance {
    ($backend:ident, $open:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = $open();
                    super::$case(&*store).await;
                }
            )*
        }
    };
}

mod endpoint;
mod relay;

/// A store in its own temporary directory, deleted after the store is closed.
pub(crate) struct Fresh<S> {
    // Declared first so it is dropped (and the file closed) before the directory goes.
    store: S,
    dir: TempDir,
}

impl<S> Fresh<S> {
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("store.sqlite")
    }
}

impl<S> Deref for Fresh<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.store
    }
}

fn fresh<S>(open: fn(&Path) -> ventana_store::StoreResult<S>) -> Fresh<S> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.sqlite")).unwrap();
    Fresh { store, dir }
}

pub(crate) fn sqlite_relay() -> Fresh<SqliteRelayStore> {
    fresh(SqliteRelayStore::open)
}

pub(crate) fn sqlite_endpoint() -> Fresh<SqliteEndpointStore> {
    fresh(SqliteEndpointStore::open)
}

/// How many migration files a store has, i.e. the schema version a fresh file must reach.
pub(crate) fn migration_count(store: &str) -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/sqlite")
        .join(store);
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count() as i64
}

pub(crate) fn schema_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

pub(crate) fn phone(digits: &str) -> PhoneNumber {
    digits.parse().unwrap()
}

pub(crate) fn waba(id: &str) -> WabaId {
    id.parse().unwrap()
}

/// A distinct, well-formed message id per number.
pub(crate) fn mid(n: u32) -> MessageId {
    format!("wamid.TEST{n:016}").parse().unwrap()
}
