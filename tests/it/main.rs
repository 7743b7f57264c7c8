//! End-to-end tests over a real socket. One binary (links DataFusion once).

mod access;
mod cancel;
mod catalog;
mod clients;
mod demo_world;
mod faults;
mod github;
mod hubspot;
mod jira;
mod observe;
mod pagerduty;
mod rate_limits;
mod rest;
mod salesforce;
mod scram;
mod security;
mod sessions;
mod slack;
mod slt;
mod stripe;
mod types;
mod warehouse;
mod wire;
