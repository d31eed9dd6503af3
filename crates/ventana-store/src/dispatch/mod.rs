//! The store traits implemented once for every backend, as macros a backend's store type
//! invokes (`dispatch::relay::relay_store!(SqliteRelayStore)`): each method moves its
//! arguments into its unit of work and hands it to the backend's `Db`.
//!
//! - `endpoint`: [`EndpointStore`](crate::EndpointStore), [`GatewayStore`](crate::GatewayStore)
//!   and [`ScheduleStore`](crate::ScheduleStore).
//! - `relay`: [`RelayStore`](crate::RelayStore) and [`TemplateStore`](crate::TemplateStore).

pub(crate) mod endpoint;
pub(crate) mod relay;
