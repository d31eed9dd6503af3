//! Ventana's domain: plain types and rules, no I/O, no runtime.
//!
//! - [`phone`]: E.164 phone numbers (`wa_id`) and their country.
//! - [`ids`]: message ids (`wamid.…`), WABA and phone-number ids, device ids.
//! - [`status`]: [`MessageStatus`], where a message stands in a history, and the order
//!   statuses move in.
//! - [`time`]: Unix time and the per-business [`BusinessClock`] (sandbox test clocks).
//! - [`cloud_error`]: what a refusal means to a business in the Cloud API's codes, decided
//!   once for the synchronous answer and the `failed` status webhook alike.
//! - [`rules`]: contact-first, blocking and the 24-hour [`ServiceWindow`], as pure functions.
//! - [`pricing`]: what a delivered business message costs: integer [`pricing::Amount`]s,
//!   the pricing models, and policies read from the operator's TOML.
//! - [`protocol`]: the client protocol's frames (devices and gateways ↔ relay), version 1.
//! - [`payload`]: what travels *inside* the ciphertext, with the clear header bound into it.
//! - [`template`]: message templates: status and review transitions, categories, the
//!   definition a business submits (validated as the Cloud API does), sends bound to it,
//!   rendering on the device, and review lints.
//! - [`user_id`]: business-scoped user ids (`US.8146…`) that do not reveal the phone number.

pub mod cloud_error;
pub mod ids;
pub mod payload;
pub mod phone;
pub mod pricing;
pub mod protocol;
pub mod rules;
pub mod status;
pub mod template;
pub mod time;
pub mod user_id;

pub use cloud_error::{CloudError, CloudErrorKind};
pub use ids::{DeviceId, IdempotencyKey, MessageId, PhoneNumberId, WabaId};
pub use phone::PhoneNumber;
pub use rules::{AccountKind, Relationship, RuleViolation, SendDecision, ServiceWindow};
pub use status::MessageStatus;
pub use time::{BusinessClock, UnixTime};
