//! The PostgreSQL harness, and the cases about the database as a whole (schemas, migrations
//! by several nodes at once). Cases with several nodes using one store are in `relay::nodes`
//! and `endpoint::nodes`.
//!
//! `VENTANA_TEST_POSTGRES` names a server and a database to administer it through, e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres` (the role must be allowed to create
//! databases). Every test creates its own database `ventana_t_<random hex>` there, connects
//! its stores to it (the relay in schema `relay`, the gateway in `gateway`), and drops it
//! afterwards (`DROP DATABASE ... WITH (FORCE)`), also when the test fails.
//!
//! - Unset (or empty): every PostgreSQL test returns at once, passing without having run.
//! - Set, but the server cannot be reached or refuses: every PostgreSQL test panics, so a CI
//!   that meant to run them fails rather than passing quietly.

use std::io::Write;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_postgres::NoTls;
use ventana_store::postgres::{PgEndpointStore, PgRelayStore};

/// The variable naming the server.
pub(crate) const ENV: &str = "VENTANA_TEST_POSTGRES";
pub(crate) const RELAY_SCHEMA: &str = "relay";
pub(crate) const GATEWAY_SCHEMA: &str = "gateway";

/// A database of its own for one test, dropped with it.
pub(crate) struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    /// A new, empty database, or `None` if `VENTANA_TEST_POSTGRES` is not set.
    pub(crate) async fn create() -> Option<Self> {
        let configured = std::env::var(ENV).ok().filter(|url| !url.trim().is_empty());
        let Some(admin) = configured else {
            say_not_run();
            return None;
        };
        Some(Self::create_at(&admin).await)
    }

    /// A new, empty database on the server `admin` points at. Panics if it cannot.
    pub(crate) async fn create_at(admin: &str) -> Self {
        let client = connect(admin).await.unwrap_or_else(|e| {
            panic!(
                "{ENV} is set to {admin:?}, but the PostgreSQL server cannot be reached: {e}\n\
                 (unset {ENV} to skip the PostgreSQL tests)"
            )
        });
        let name = format!("ventana_t_{}", random_hex());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("{ENV}: cannot create the test database {name}: {e:?}"));
        Self {
            url: with_dbname(admin, &name),
            admin: admin.to_owned(),
            name,
        }
    }

    /// The URL of this database, for the stores.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A plain connection to this database, to look at what the stores wrote.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.unwrap()
    }

    pub(crate) async fn relay(&self) -> PgRelayStore {
        PgRelayStore::connect(&self.url, RELAY_SCHEMA)
            .await
            .unwrap_or_else(|e| panic!("cannot connect a relay store to {}: {e}", self.name))
    }

    pub(crate) async fn endpoint(&self) -> PgEndpointStore {
        PgEndpointStore::connect(&self.url, GATEWAY_SCHEMA)
            .await
            .unwrap_or_else(|e| panic!("cannot connect a gateway store to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime (even while it unwinds from a panic), which
        // cannot be blocked on: a thread of its own with a small runtime does the work.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = connect(&admin).await?;
                // FORCE ends the stores' connections still open.
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| format!("{e:?}"))
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping the test database {} panicked", self.name),
        }
    }
}

/// Says once per run, where it is seen, that the PostgreSQL tests passed without running.
fn say_not_run() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        // Straight to the file: the test harness captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\nnote: {ENV} is not set: the PostgreSQL store tests return without running \
             (e.g. {ENV}=postgres://postgres@127.0.0.1:5432/postgres to run them)\n"
        );
    });
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database replaced by `name`, for URLs and `key=value` strings alike.
fn with_dbname(url: &str, name: &str) -> String {
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|scheme| url.starts_with(scheme));
    let Some(scheme) = scheme else {
        // Of repeated keys, the last one counts.
        return format!("{url} dbname={name}");
    };
    let rest = &url[scheme.len()..];
    let (before_query, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(authority, _)| authority);
    format!("{scheme}{authority}/{name}{query}")
}

fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}

/// A store connected to a database of its own; the store goes first, then the database.
pub(crate) struct Fresh<S> {
    store: S,
    db: TestDb,
}

impl<S> Fresh<S> {
    pub(crate) fn db(&self) -> &TestDb {
        &self.db
    }
}

impl<S> Deref for Fresh<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.store
    }
}

/// A relay store in a fresh database, or `None` if PostgreSQL is not configured.
pub(crate) async fn relay() -> Option<Fresh<PgRelayStore>> {
    let db = TestDb::create().await?;
    Some(Fresh {
        store: db.relay().await,
        db,
    })
}

/// A gateway store in a fresh database, or `None` if PostgreSQL is not configured.
pub(crate) async fn endpoint() -> Option<Fresh<PgEndpointStore>> {
    let db = TestDb::create().await?;
    Some(Fresh {
        store: db.endpoint().await,
        db,
    })
}

/// The migrations recorded in `schema`, as (version, name).
pub(crate) async fn recorded_migrations(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Vec<(i64, String)> {
    client
        .query(
            &format!("SELECT version, name FROM {schema}.schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// What every schema of `store`'s must hold after connecting: all of this build's steps.
pub(crate) fn expected_migrations(store: &str) -> Vec<(i64, String)> {
    (1..)
        .zip(crate::migration_names("postgres", store))
        .collect()
}

#[test]
fn the_test_database_replaces_the_given_one() {
    assert_eq!(
        with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "t"),
        "postgres://postgres@127.0.0.1:5432/t"
    );
    assert_eq!(
        with_dbname("postgresql://u:p@h/db?sslmode=disable", "t"),
        "postgresql://u:p@h/t?sslmode=disable"
    );
    assert_eq!(with_dbname("postgres://h", "t"), "postgres://h/t");
    assert_eq!(
        with_dbname("host=h user=u dbname=db", "t"),
        "host=h user=u dbname=db dbname=t"
    );
}

/// Set but unreachable must fail loudly: here a port nobody listens on.
#[tokio::test]
#[should_panic(expected = "cannot be reached")]
async fn an_unreachable_server_fails_the_test() {
    TestDb::create_at("postgres://postgres@127.0.0.1:1/postgres").await;
}

/// Nodes starting at once on a new database: one migrates each schema, the others wait for
/// it and find nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_each_schema_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (r1, r2, r3, e1, e2, e3) = tokio::join!(
        PgRelayStore::connect(db.url(), RELAY_SCHEMA),
        PgRelayStore::connect(db.url(), RELAY_SCHEMA),
        PgRelayStore::connect(db.url(), RELAY_SCHEMA),
        PgEndpointStore::connect(db.url(), GATEWAY_SCHEMA),
        PgEndpointStore::connect(db.url(), GATEWAY_SCHEMA),
        PgEndpointStore::connect(db.url(), GATEWAY_SCHEMA),
    );
    for connected in [r1.map(drop), r2.map(drop), r3.map(drop)] {
        connected.unwrap();
    }
    for connected in [e1.map(drop), e2.map(drop), e3.map(drop)] {
        connected.unwrap();
    }
    let client = db.client().await;
    assert_eq!(
        recorded_migrations(&client, RELAY_SCHEMA).await,
        expected_migrations("relay")
    );
    assert_eq!(
        recorded_migrations(&client, GATEWAY_SCHEMA).await,
        expected_migrations("endpoint")
    );
}

#[tokio::test]
async fn a_schema_from_a_newer_build_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    drop(db.relay().await);
    let client = db.client().await;
    client
        .execute(
            &format!(
                "INSERT INTO {RELAY_SCHEMA}.schema_migrations (version, name, applied_at)
                 VALUES (99, '0099_future', 0)"
            ),
            &[],
        )
        .await
        .unwrap();
    let refused = PgRelayStore::connect(db.url(), RELAY_SCHEMA).await;
    assert!(
        matches!(&refused, Err(ventana_store::StoreError::Backend(e)) if e.contains("newer")),
        "{refused:?}"
    );
}

/// The relay's and the gateway's tables live apart, so the relay's can be inspected (for
/// plaintext, say) on their own; nothing lands in `public`.
#[tokio::test]
async fn the_relay_and_the_gateway_keep_to_their_own_schemas() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (_relay, _gateway) = (db.relay().await, db.endpoint().await);
    let client = db.client().await;
    let tables = async |schema: &str| -> Vec<String> {
        client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1
                 ORDER BY table_name",
                &[&schema],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    assert_eq!(
        tables(RELAY_SCHEMA).await,
        [
            "accounts",
            "billing_usage",
            "blocks",
            "businesses",
            "consent_events",
            "conversations",
            "devices",
            "envelopes",
            "fallback_keys",
            "ledger",
            "one_time_keys",
            "policy_versions",
            "relationships",
            "schema_migrations",
            "submissions",
            "template_events",
            "template_versions",
            "templates",
            "tier_events",
            "verifications",
        ]
    );
    assert_eq!(
        tables(GATEWAY_SCHEMA).await,
        [
            "access_tokens",
            "businesses",
            "contacts",
            "endpoint_leases",
            "idempotency_keys",
            "identities",
            "message_callback_data",
            "messages",
            "outbox",
            "phone_numbers",
            "processed",
            "schedules",
            "schema_migrations",
            "sessions",
            "template_cache",
            "template_cursors",
            "webhook_attempts",
            "webhooks",
        ]
    );
    assert!(tables("public").await.is_empty());
}

#[tokio::test]
async fn a_bad_schema_name_is_refused_before_connecting() {
    // No server needed: the name is checked first.
    for bad in ["Relay", "relay; DROP TABLE x", "pg_catalog", ""] {
        let refused = PgRelayStore::connect("postgres://nobody@127.0.0.1:1/none", bad).await;
        assert!(
            matches!(refused, Err(ventana_store::StoreError::Backend(_))),
            "{bad}"
        );
    }
}
