//! `GET /events` (`docker events`): the kept events from `since`, then new ones as they
//! happen, until `until` if given; filtered by `type`, `event`, `container`, `image`,
//! `volume` and `label`, as Docker filters them.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::{stream, AppState};
use crate::daemon::events::Event;
pub use crate::daemon::events::{container, emit_container, image, volume};

pub async fn events(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let since = q.get("since").map(|s| timestamp(s)).transpose()?;
    let until = q.get("until").map(|s| timestamp(s)).transpose()?;
    let filters = Filters::parse(q.get("filters").map(String::as_str))?;
    let (kept, mut live) = d.events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let wanted = move |e: &Event| {
        since.is_none_or(|s| e.time_nano >= s)
            && until.is_none_or(|u| e.time_nano <= u)
            && matches(&filters, e)
    };
    tokio::spawn(async move {
        if since.is_some() {
            for e in kept.iter().filter(|e| wanted(e)) {
                if tx.send(stream::json_line(e)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let next = match until {
                Some(u) => {
                    let left = u - now_nanos();
                    if left <= 0 {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_nanos(left as u64), live.recv()).await
                    {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                None => live.recv().await,
            };
            match next {
                Ok(e) if wanted(&e) => {
                    if tx.send(stream::json_line(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `since`/`until` as the CLI sends them (unix seconds with an optional fraction) or as
/// RFC 3339; in nanoseconds.
fn timestamp(s: &str) -> ApiResult<i64> {
    if let Some(t) = strata_core::rfc3339::parse(s) {
        return Ok(t.timestamp_nanos_opt().unwrap_or(i64::MAX));
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid timestamp {s:?}")))?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}")
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid timestamp {s:?}")))?
    };
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

fn matches(f: &Filters, e: &Event) -> bool {
    let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str).unwrap_or("");
    let names_or_id = |v: &str| e.actor.id.starts_with(v) || attr("name") == v;
    f.matches("type", |t| t == e.kind)
        && f.matches("event", |a| {
            a == e.action || e.action.starts_with(&format!("{a}:"))
        })
        && (e.kind != "container" || f.matches("container", names_or_id))
        && f.matches("image", |i| match e.kind {
            "container" => attr("image") == i,
            "image" => e.actor.id == i || attr("name") == i,
            _ => false,
        })
        && (e.kind != "volume" || f.matches("volume", |v| e.actor.id == v))
        && f.get("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => attr(k) == v,
            None => e.actor.attributes.contains_key(l.as_str()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_the_cli_sends_them() {
        assert_eq!(timestamp("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(
            timestamp("1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(timestamp("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert!(timestamp("soon").is_err());
    }
}
