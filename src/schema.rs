//! The JSON Schema (2020-12) of the HealthPolicy document, for editors and CI.

use crate::policy::HealthPolicy;

/// The schema as pretty JSON, ending with a newline (identical to `policies/schema.json`).
pub fn policy_schema_json() -> String {
    let mut schema = schemars::schema_for!(HealthPolicy);
    schema.insert(
        "$id".to_owned(),
        "https://hemostat.io/schemas/healthpolicy-v1alpha1.json".into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is always JSON");
    text.push('\n');
    text
}
