//! Joinery's engine: the DataFusion session factory, the catalog (one SQL schema per configured
//! connection plus the `joinery` system schema), the connector contract, and the error kinds every
//! layer shares.
//!
//! The engine never names a SaaS tool: connectors live in `joinery-providers` and reach the engine
//! only through [`connector::Connector`].

pub mod audit;
pub mod catalog;
pub mod connector;
pub mod error;
pub mod grants;
pub mod meta;
pub mod metrics;
pub mod options;
pub mod policy;
pub mod rest;
pub mod session;
pub mod sqldb;
pub mod system;

pub use catalog::{Catalog, DEFAULT_SCHEMA, SYSTEM_SCHEMA};
pub use connector::{Connector, TableEntry};
pub use error::{ErrorKind, JoineryError, Result};
pub use session::{EngineConfig, SessionFactory};
