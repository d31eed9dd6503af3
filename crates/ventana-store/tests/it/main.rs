//! The stores' conformance suite.
//!
//! Each case is an `async fn` over `&dyn RelayStore`, `&dyn EndpointStore` or
//! `&dyn GatewayStore`, so every backend runs the same cases: a backend adds one line per
//! store (`relay_cases!(postgres, crate::open::postgres_relay)`) and an async function opening
//! a fresh store, or answering `None` when the backend is not configured on this machine.
//! Cases that depend on a backend's files (reopening) sit beside them as plain tests; those
//! that need several nodes sharing one PostgreSQL database are in `postgres`.
//!
//! PostgreSQL runs when `VENTANA_TEST_POSTGRES` names a server
//! (`postgres://postgres@127.0.0.1:5432/postgres`): see `postgres` for how.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use ventana_core::{MessageId, PhoneNumber, WabaId};
use ventana_store::sqlite::{SqliteEndpointStore, SqliteRelayStore};

/// Declares a module named after a backend with one `#[tokio::test]` per case; each opens a
/// fresh store with `$open().await` and runs the case against it. A backend not configured
/// here opens `None`, and its cases return at once.
macro_rules! conformance {
    ($backend:ident, $open:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = $open().await else { return };
                    super::$case(&*store).await;
                }
            )*
        }
    };
}

mod endpoint;
mod idempotency;
mod ledger;
mod postgres;
mod relay;
mod schedules;

/// What the conformance macros open each case's store with.
pub(crate) mod open {
    use super::Fresh;
    use ventana_store::sqlite::{SqliteEndpointStore, SqliteRelayStore};

    pub(crate) use crate::postgres::{endpoint as postgres_endpoint, relay as postgres_relay};

    pub(crate) async fn sqlite_relay() -> Option<Fresh<SqliteRelayStore>> {
        Some(super::sqlite_relay())
    }

    pub(crate) async fn sqlite_endpoint() -> Option<Fresh<SqliteEndpointStore>> {
        Some(super::sqlite_endpoint())
    }
}

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

/// How many SQLite migration files a store has, i.e. the schema version a fresh file must
/// reach.
pub(crate) fn migration_count(store: &str) -> i64 {
    migration_names("sqlite", store).len() as i64
}

/// A backend's migration files for a store, by name (`0001_init`), in order.
pub(crate) fn migration_names(backend: &str, store: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
        .join(store);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("sql".as_ref()))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
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

/// Leases webhook jobs as a node's dispatcher does, passing over no route.
pub async fn lease(
    store: &(impl ventana_store::WebhookStore + ?Sized),
    node: &str,
    now: ventana_core::UnixTime,
    lease_secs: i64,
    limit: u32,
) -> ventana_store::StoreResult<Vec<ventana_store::webhook::WebhookJob>> {
    store
        .lease_webhooks(ventana_store::webhook::LeaseRequest {
            node,
            now,
            lease_secs,
            limit,
            per_route: u32::MAX,
            skip: &[],
        })
        .await
}

/// Settles a webhook attempt as delivered, as the dispatcher does.
pub async fn delivered(
    store: &(impl ventana_store::WebhookStore + ?Sized),
    id: &str,
) -> ventana_store::StoreResult<()> {
    store
        .settle_webhook(
            attempt(id, None, Some(200)),
            1,
            ventana_store::webhook::WebhookOutcome::Delivered,
        )
        .await
}

/// Settles a failed webhook attempt by `node`, due again at `next`, as the dispatcher does.
pub async fn retry(
    store: &(impl ventana_store::WebhookStore + ?Sized),
    node: &str,
    id: &str,
    attempts: u32,
    next: ventana_core::UnixTime,
    error: &str,
) -> ventana_store::StoreResult<()> {
    store
        .settle_webhook(
            ventana_store::webhook::WebhookAttempt {
                node: node.to_owned(),
                ..attempt(id, Some(error), None)
            },
            attempts,
            ventana_store::webhook::WebhookOutcome::Retry { next, now: next },
        )
        .await
}

/// An attempt at `id` as the delivery log keeps it.
pub fn attempt(
    id: &str,
    error: Option<&str>,
    http_status: Option<u16>,
) -> ventana_store::webhook::WebhookAttempt {
    ventana_store::webhook::WebhookAttempt {
        event_id: id.to_owned(),
        waba_id: waba("1001"),
        node: "n1".into(),
        at_ms: 1_000,
        url: Some("http://127.0.0.1:1/hook".into()),
        http_status,
        latency_ms: 3,
        error: error.map(str::to_owned),
    }
}
