//! The Graph API conventions the business API speaks, so Cloud API SDKs work unchanged.
//!
//! - [`path`]: `/{vN.M}?/{node}[/{edge}]` request paths.
//! - [`query`]: form-encoded query strings, decoded, and kept raw for paging links.
//! - [`auth`]: where a request's access token may be (`Authorization: Bearer`, `?access_token=`).
//! - [`error`]: `GraphError`, the one HTTP error type, written as Graph's error envelope.
//! - [`send`]: the body of `POST /{phone_number_id}/messages`, parsed into a `SendRequest`.
//! - [`response`]: the success bodies SDKs read back (sends, phone numbers, templates).

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod path;
pub(crate) mod query;
pub(crate) mod response;
pub(crate) mod send;
