//! The `ventana` binary's parts: nothing here but wiring of the crates below it.
//!
//! - [`config`]: typed configuration (defaults, TOML file, `VENTANA_*` variables).
//! - [`node`]: the all-in-one node (`ventana serve`): relay + hosted gateway on one listener.
//! - [`receiver`]: a signature-checking webhook receiver on loopback (demo and tests).
//! - [`cli`]: the subcommands: operator commands over the admin API, end-user commands on a
//!   local device directory, the interactive chat, and the demo.

pub mod cli;
pub mod config;
pub mod node;
pub mod receiver;
