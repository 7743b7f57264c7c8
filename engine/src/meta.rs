//! Descriptions travel with the data as Arrow metadata, so every layer (information_schema,
//! `pg_description`, agents reading `col_description`) reads them from one place: a table's
//! description is the schema metadata key [`DESCRIPTION`], a column's the field metadata key of the
//! same name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};

/// Metadata key holding a human-readable description.
pub const DESCRIPTION: &str = "description";
/// Field metadata key marking a Utf8 column whose values are JSON documents (sent as `json`).
pub const JSON_COLUMN: &str = "joinery.json";

/// A field with a description.
pub fn described(field: Field, description: &str) -> Field {
    let mut md = field.metadata().clone();
    md.insert(DESCRIPTION.to_string(), description.to_string());
    field.with_metadata(md)
}

/// Mark a Utf8 field as holding JSON text.
pub fn json_field(field: Field) -> Field {
    let mut md = field.metadata().clone();
    md.insert(JSON_COLUMN.to_string(), "true".to_string());
    field.with_metadata(md)
}

/// Whether a field is a JSON-text column.
pub fn is_json_field(field: &Field) -> bool {
    field.metadata().contains_key(JSON_COLUMN)
}

/// A schema carrying a table description.
pub fn with_table_description(schema: Schema, description: &str) -> SchemaRef {
    let mut md: HashMap<String, String> = schema.metadata().clone();
    md.insert(DESCRIPTION.to_string(), description.to_string());
    Arc::new(schema.with_metadata(md))
}

pub fn table_description(schema: &Schema) -> Option<&str> {
    schema.metadata().get(DESCRIPTION).map(String::as_str)
}

pub fn column_description(field: &Field) -> Option<&str> {
    field.metadata().get(DESCRIPTION).map(String::as_str)
}
