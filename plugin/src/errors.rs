//! Errors across the plugin boundary. Docker's protocol carries errors as text in `Err`; our
//! server prefixes the text with the error's kind so our client can give callers the same
//! variant (NotFound, Busy, ...) a built-in driver would. Other plugins' texts stay `Other`.

use strata_core::error::Error;

const KINDS: [&str; 5] = [
    "not found",
    "already exists",
    "busy",
    "invalid input",
    "unsupported",
];

/// The `Err` text our server sends for an error.
pub fn encode(e: &Error) -> String {
    let kind = match e {
        Error::NotFound(_) => "not found",
        Error::AlreadyExists(_) => "already exists",
        Error::Busy(_) => "busy",
        Error::InvalidInput(_) => "invalid input",
        Error::Unsupported(_) => "unsupported",
        Error::Io { .. } | Error::Other(_) => return e.to_string(),
    };
    let text = match e {
        Error::NotFound(m)
        | Error::AlreadyExists(m)
        | Error::Busy(m)
        | Error::InvalidInput(m)
        | Error::Unsupported(m) => m.clone(),
        _ => e.to_string(),
    };
    format!("[{kind}] {text}")
}

/// The error a client raises for a plugin's `Err` text.
pub fn decode(plugin: &str, endpoint: &str, text: &str) -> Error {
    let body = text
        .split_once(": [")
        .map(|(_, r)| format!("[{r}"))
        .unwrap_or_else(|| text.to_string());
    for kind in KINDS {
        if let Some(msg) = body.strip_prefix(&format!("[{kind}] ")) {
            let msg = msg.to_string();
            return match kind {
                "not found" => Error::NotFound(msg),
                "already exists" => Error::AlreadyExists(msg),
                "busy" => Error::Busy(msg),
                "invalid input" => Error::InvalidInput(msg),
                _ => Error::Unsupported(msg),
            };
        }
    }
    Error::Other(format!("plugin {plugin:?}: {endpoint}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_wire() {
        let e = decode(
            "p",
            "GraphDriver.Remove",
            &encode(&Error::busy("layer x is mounted")),
        );
        assert!(
            matches!(e, Error::Busy(ref m) if m == "layer x is mounted"),
            "{e:?}"
        );
        let e = decode("p", "GraphDriver.Remove", "something broke");
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("something broke") && m.contains("\"p\""))
        );
    }
}
