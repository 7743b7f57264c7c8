//! The REST-table toolkit: a small declarative [`TableSpec`] per API table becomes a DataFusion
//! table that pushes filters, projection and LIMIT into the API's own parameters and makes the
//! fewest calls a query allows.
//!
//! Writing a connector:
//! 1. describe each table as a [`TableSpec`] (path, records path, columns with JSON paths and
//!    descriptions, filter rules marked exact or not, pagination, page size);
//! 2. build a [`fetch::Fetcher`] from the connection's base URL and credentials;
//! 3. return a [`table::RestConnector`] from the connector factory.
//!
//! Planning ([`plan`]) is pure and decides what is pushed; execution ([`exec`]) walks pages
//! lazily; [`fetch`] owns every HTTP concern (auth, retries, rate-limit headers, call log).

pub mod decode;
pub mod exec;
pub mod fake;
pub mod fakekit;
pub mod fetch;
pub mod plan;
pub mod ql;
pub mod spec;
pub mod table;

pub use fetch::{Auth, CallLog, FetchConfig, Fetcher, Secret};
pub use spec::TableSpec;
pub use table::{RestConnector, RestTable};
