//! Ventana end to end: real nodes on loopback (port 0, temporary SQLite files), real user
//! devices over WebSockets, real crypto, and a real webhook receiver checking signatures.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod bad_input;
mod billing;
mod cli;
mod cluster;
mod conversation;
mod harness;
mod idempotency;
mod limits;
mod nodes;
mod reconciliation;
mod recovery;
mod restart;
mod rules;
mod schedules;
mod serve;
mod storm;
mod template_device;
mod template_review;
mod template_send;
mod templates_api;
mod webhooks;
