//! Docker's `filters` query parameter: JSON `{"key": ["v1", "v2"]}` or the older
//! `{"key": {"v1": true}}`.

use std::collections::BTreeMap;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(Self::default());
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters {raw:?}: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("filters must be a JSON object"))?;
        let mut map = BTreeMap::new();
        for (k, v) in obj {
            let values: Vec<String> = match v {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
                serde_json::Value::Object(items) => items
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => return Err(ApiError::bad_request(format!("invalid filter {k:?}"))),
            };
            map.insert(k.clone(), values);
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// True when the key is absent or any of its values satisfies `f`.
    pub fn matches(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        let values = self.get(key);
        values.is_empty() || values.iter().any(|v| f(v))
    }

    /// `label=key` or `label=key=value`: all must hold.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.get("label")
            .iter()
            .all(|want| match want.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(want.as_str()),
            })
    }

    pub fn bool(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.get(key).first().map(String::as_str) {
            None => Ok(None),
            Some("1" | "true" | "True") => Ok(Some(true)),
            Some("0" | "false" | "False") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid filter '{key}={other}': expected true or false"
            ))),
        }
    }
}

/// Docker's boolean query values: `1`, `true`, `True` are true.
pub fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "True" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filter_shapes_parse() {
        let f = Filters::parse(Some(r#"{"dangling":["true"],"label":{"a=b":true}}"#)).unwrap();
        assert_eq!(f.bool("dangling").unwrap(), Some(true));
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "b".to_string());
        assert!(f.matches_labels(&labels));
        assert!(Filters::parse(Some("not json")).is_err());
    }
}
