//! The `ventana` binary's parts: nothing here but wiring of the crates below it.
//!
//! - [`cli`]: the subcommands: `serve` (the node of `ventana-node`), operator commands over
//!   the admin API, end-user commands on a local device directory, the interactive chat, the
//!   demo, and `bench` (parsed here, run by `ventana-bench`). `cli::screen` lays a device's
//!   messages out for the terminal.

pub mod cli;
