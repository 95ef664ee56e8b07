//! Registry values: an organization's settings with the keys of its `[organizations.<id>]`
//! section, as a JSON object (what the admin API and the CLI write) or as TOML text (a section
//! body pasted from the file). Stored and echoed as JSON.

use serde_json::Value as Json;
use toml::Value as Toml;

/// Why a value is not an organization's settings at all (before its keys are checked).
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("not UTF-8")]
    Utf8,
    #[error("not a JSON object nor TOML: {0}")]
    Syntax(String),
    #[error("{0}")]
    Shape(String),
}

/// Reads a value: JSON when it starts with `{`, else TOML text.
pub fn decode(bytes: &[u8]) -> Result<Toml, ValueError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ValueError::Utf8)?;
    if text.trim_start().starts_with('{') {
        let json: Json =
            serde_json::from_str(text).map_err(|e| ValueError::Syntax(e.to_string()))?;
        from_json(&json)
    } else {
        text.parse::<toml::Table>()
            .map(Toml::Table)
            .map_err(|e| ValueError::Syntax(e.message().to_owned()))
    }
}

/// A JSON value as TOML (no `null`: TOML has none).
pub fn from_json(json: &Json) -> Result<Toml, ValueError> {
    Ok(match json {
        Json::Null => {
            return Err(ValueError::Shape(
                "null is not allowed: leave the key out".into(),
            ))
        }
        Json::Bool(b) => Toml::Boolean(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Toml::Integer(i),
            (None, Some(f)) => Toml::Float(f),
            _ => return Err(ValueError::Shape(format!("{n} is out of range"))),
        },
        Json::String(s) => Toml::String(s.clone()),
        Json::Array(items) => Toml::Array(items.iter().map(from_json).collect::<Result<_, _>>()?),
        Json::Object(map) => Toml::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), from_json(v)?)))
                .collect::<Result<_, ValueError>>()?,
        ),
    })
}

/// A TOML value as JSON (datetimes as their text).
pub fn to_json(toml: &Toml) -> Json {
    match toml {
        Toml::String(s) => Json::String(s.clone()),
        Toml::Integer(i) => Json::from(*i),
        Toml::Float(f) => Json::from(*f),
        Toml::Boolean(b) => Json::Bool(*b),
        Toml::Datetime(d) => Json::String(d.to_string()),
        Toml::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Toml::Table(t) => Json::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_toml_text_read_the_same() {
        let json = decode(
            br#"{"url": "https://a.example/h", "concurrency": 4, "signing_secret": {"env": "S"}}"#,
        )
        .unwrap();
        let toml = decode(
            b"url = \"https://a.example/h\"\nconcurrency = 4\nsigning_secret = { env = \"S\" }\n",
        )
        .unwrap();
        assert_eq!(json, toml);
        assert_eq!(from_json(&to_json(&json)).unwrap(), json);
    }

    #[test]
    fn null_and_garbage_are_refused_with_a_reason() {
        assert!(decode(br#"{"url": null}"#)
            .unwrap_err()
            .to_string()
            .contains("null"));
        assert!(matches!(decode(b"{not json"), Err(ValueError::Syntax(_))));
        assert!(matches!(decode(&[0xff, 0xfe]), Err(ValueError::Utf8)));
    }
}
