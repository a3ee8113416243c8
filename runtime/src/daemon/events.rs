//! The daemon's event log (`docker events`): what happened to containers, images, volumes and
//! exec instances, in order. Subscribers get events as they happen; the last [`KEPT`] events
//! are kept so `since` can look back, as Docker keeps its last 1,000 or so.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for `since` queries.
pub const KEPT: usize = 1024;

/// One event, in the shape Docker's `/events` streams (the legacy `status`/`id`/`from` fields
/// included, which older clients read).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: &'static str,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

pub struct Events {
    kept: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(KEPT).0,
        }
    }
}

impl Events {
    /// Records and publishes an event. `kind` is Docker's type (container, image, volume);
    /// container events carry the image as `from` and in the attributes, as Docker's.
    pub fn emit(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let legacy = kind == "container" || kind == "image";
        let event = Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: (kind == "container")
                .then(|| attributes.get("image").cloned())
                .flatten(),
            kind,
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local",
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        };
        // Kept and sent under one lock, so a subscriber that read the kept events before
        // subscribing neither misses nor repeats one.
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// The kept events and a subscription to the ones after them.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.iter().cloned().collect(), self.live.subscribe())
    }
}

/// Attributes from `(key, value)` pairs.
pub fn attrs<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Emits a container event with Docker's attributes: the container's labels, the image as it
/// was given, its name, and `extra`. A container that is gone emits nothing.
pub fn container(d: &super::Daemon, action: &str, key: &str, extra: &[(&str, &str)]) {
    if let Ok(c) = d.containers.get(key) {
        emit_container(d, action, &c.snapshot(), extra);
    }
}

/// As [`container`], from a record taken before the container went (`destroy`).
pub fn emit_container(
    d: &super::Daemon,
    action: &str,
    rec: &super::containers::record::ContainerRecord,
    extra: &[(&str, &str)],
) {
    let mut attributes = rec.config.labels.clone().unwrap_or_default();
    attributes.insert("image".into(), rec.image_ref.clone());
    attributes.insert("name".into(), rec.name.clone());
    for (k, v) in extra {
        attributes.insert(k.to_string(), v.to_string());
    }
    d.events.emit("container", action, &rec.id, attributes);
}

/// Emits an image event (`name` is the reference the action concerned, if any).
pub fn image(d: &super::Daemon, action: &str, id: &str, name: Option<&str>) {
    let attributes = name.map(|n| attrs([("name", n)])).unwrap_or_default();
    d.events.emit("image", action, id, attributes);
}

/// Emits a volume event.
pub fn volume(d: &super::Daemon, action: &str, name: &str, driver: &str) {
    let attributes = attrs([("driver", driver)]);
    d.events.emit("volume", action, name, attributes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_kept_and_streamed_in_order() {
        let e = Events::default();
        e.emit(
            "container",
            "create",
            "c1",
            attrs([("image", "bb"), ("name", "x")]),
        );
        let (kept, mut live) = e.subscribe();
        e.emit("volume", "create", "v1", attrs([("driver", "local")]));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].from.as_deref(), Some("bb"));
        let next = live.recv().await.unwrap();
        let v = serde_json::to_value(&next).unwrap();
        assert_eq!(v["Type"], "volume");
        assert_eq!(v["Actor"]["ID"], "v1");
        assert!(
            v.get("status").is_none(),
            "volume events have no legacy fields"
        );
        for i in 0..KEPT + 5 {
            e.emit("image", "tag", &i.to_string(), BTreeMap::new());
        }
        assert_eq!(e.subscribe().0.len(), KEPT);
    }
}
