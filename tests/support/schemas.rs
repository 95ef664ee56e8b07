//! The JSON Schemas in `schemas/`, compiled once, for asserting on everything the service emits.

use serde_json::Value;

use super::kafka::repo_root;

const BASE: &str = "https://consent-webhooks.invalid/schemas/";

fn load(name: &str) -> Value {
    let path = repo_root().join("schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(name: &str) -> jsonschema::Validator {
    let mut options = jsonschema::options().should_validate_formats(true);
    for dependency in ["webhook-event.schema.json", "consent-change.schema.json"] {
        let resource =
            jsonschema::Resource::from_contents(load(dependency)).expect("schema resource");
        options = options.with_resource(format!("{BASE}{dependency}"), resource);
    }
    options
        .build(&load(name))
        .unwrap_or_else(|e| panic!("schema {name}: {e}"))
}

fn check(name: &str, instance: &Value) {
    let validator = validator(name);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} does not match {name}: {errors:#?}"
    );
}

pub fn assert_consent_change(instance: &Value) {
    check("consent-change.schema.json", instance);
}

pub fn assert_webhook_event(instance: &Value) {
    check("webhook-event.schema.json", instance);
}

pub fn assert_dead_letter(instance: &Value) {
    check("dead-letter.schema.json", instance);
}

pub fn is_valid_consent_change(instance: &Value) -> bool {
    validator("consent-change.schema.json").is_valid(instance)
}
