//! Renders Docker's JSON message streams (load, import, build, commit) with progress bars.

use std::collections::HashMap;

use hyper::body::Incoming;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use strata_api_types::progress::JsonMessage;

use crate::client::{next_chunk, ClientError};

/// Reads the stream to its end; prints `stream` text, draws a bar per `id` with progress, and
/// fails on an in-stream error. Returns the `aux.ID` if the stream carried one.
pub async fn render(mut body: Incoming, quiet: bool) -> Result<Option<String>, ClientError> {
    let bars = MultiProgress::new();
    let mut by_id: HashMap<String, ProgressBar> = HashMap::new();
    let style = ProgressStyle::with_template("{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut pending = Vec::new();
    let mut aux_id = None;
    while let Some(chunk) = next_chunk(&mut body).await? {
        pending.extend_from_slice(&chunk);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let Ok(msg) = serde_json::from_slice::<JsonMessage>(&line) else {
                continue;
            };
            if let Some(err) = msg.error {
                for b in by_id.values() {
                    b.abandon();
                }
                return Err(ClientError::Api(err));
            }
            if let Some(id) = msg.aux.and_then(|a| a.id) {
                aux_id = Some(id);
            }
            if let Some(text) = msg.stream {
                if !quiet {
                    bars.suspend(|| print!("{text}"));
                }
                continue;
            }
            let status = msg.status.as_deref().unwrap_or("");
            let id = msg.id.as_deref();
            let detail = msg.progress_detail.unwrap_or_default();
            let (current, total) = (detail.current, detail.total);
            match (id, current) {
                (Some(id), Some(cur)) if !quiet => {
                    let bar = by_id.entry(id.to_string()).or_insert_with(|| {
                        let b = bars.add(ProgressBar::new(total.unwrap_or(0)));
                        b.set_style(style.clone());
                        b.set_prefix(id.to_string());
                        b
                    });
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    bar.set_position(cur);
                    bar.set_message(status.to_string());
                }
                (Some(id), None) if !quiet => {
                    if let Some(bar) = by_id.get(id) {
                        bar.finish_with_message(status.to_string());
                    } else {
                        bars.suspend(|| println!("{id}: {status}"));
                    }
                }
                (None, _) if !quiet && !status.is_empty() => {
                    bars.suspend(|| println!("{status}"));
                }
                _ => {}
            }
        }
    }
    for b in by_id.values() {
        if !b.is_finished() {
            b.finish();
        }
    }
    Ok(aux_id)
}
