//! Joinery's connectors: one folder per kind, each a small spec on the engine's toolkit, plus
//! the registry that turns a `[connections.<name>]` section into a live [`Connector`].

pub mod demo;
pub mod fakeutil;
pub mod files;
pub mod github;
pub mod hubspot;
pub mod jira;
pub mod mysql;
pub mod pagerduty;
pub mod postgres;
pub mod registry;
pub mod rest;
pub mod salesforce;
pub mod slack;
pub mod sqldb;
pub mod stripe;

pub use registry::{
    BuildContext, ConnectionSpec, ConnectorFactory, SecretWriter, factories, factory_for,
};
