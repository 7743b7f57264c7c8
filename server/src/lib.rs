//! Joinery's server: the Postgres wire front end, config, and what the `joinery` binary runs.

pub mod access;
pub mod auth;
pub mod commands;
pub mod config;
pub mod encode;
pub mod errors;
pub mod explain;
pub mod handler;
pub mod naming;
pub mod observe;
pub mod pgcatalog;
pub mod rewrite;
pub mod scram;
pub mod secrets;
pub mod server;
pub mod session;
pub mod settings;
