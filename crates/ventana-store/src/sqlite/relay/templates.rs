//! [`TemplateStore`](crate::TemplateStore) on SQLite, in the relay's file. Every write runs
//! as a unit of the one writer (see `db`), so each decision holds until its commit without
//! further locking, and events commit in `seq` order.

use super::SqliteRelayStore;

crate::dispatch::relay::template_store!(SqliteRelayStore);
