//! [`TemplateStore`](crate::TemplateStore) on PostgreSQL, in the relay's schema; which locks
//! keep each decision true when several nodes write at once is said in
//! [`crate::units::relay::templates`].

use super::PgRelayStore;

crate::dispatch::relay::template_store!(PgRelayStore);
