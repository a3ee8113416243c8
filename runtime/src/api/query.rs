//! Repeated query parameters (`names=a&names=b`, `changes=`, `t=`, `type=`), which axum's
//! `Query` map keeps one of: decoded by `form_urlencoded`, as every other parameter is.

/// Every value of `key` in the raw query, in order.
pub fn all_values(raw: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_are_decoded_in_order() {
        let raw = "names=bb%3Alatest&x=1&names=a+b&names=%E2%9C%93";
        assert_eq!(all_values(Some(raw), "names"), ["bb:latest", "a b", "✓"]);
        assert!(all_values(None, "names").is_empty());
    }
}
