//! Progress of a pull or push as Docker's JSON messages (`{"status": "Downloading",
//! "progressDetail": {"current", "total"}, "progress": "[==>  ] 1.2MB/3.4MB", "id": "…"}`).

use berth_models::messages::{JsonMessage, ProgressDetail};
use berth_store::Digest;

/// Where progress goes. Sending never blocks a transfer; a client that went away is ignored.
#[derive(Clone)]
pub struct Progress(Option<tokio::sync::mpsc::UnboundedSender<JsonMessage>>);

impl Progress {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<JsonMessage>) -> Progress {
        Progress(Some(tx))
    }

    /// Progress nobody reads.
    pub fn none() -> Progress {
        Progress(None)
    }

    pub fn send(&self, m: JsonMessage) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(m);
        }
    }

    pub fn status(&self, id: Option<&str>, status: &str) {
        let mut m = JsonMessage::status(status);
        if let Some(id) = id {
            m.id = Some(id.to_string());
            m.progress_detail = Some(ProgressDetail::default());
        }
        self.send(m);
    }

    pub fn bytes(&self, id: &str, status: &str, current: u64, total: u64) {
        self.send(JsonMessage {
            status: Some(status.to_string()),
            progress_detail: Some(ProgressDetail { current: Some(current), total: Some(total) }),
            progress: Some(bar(current, total)),
            id: Some(id.to_string()),
            ..Default::default()
        });
    }
}

/// The 12 hex digits Docker names a layer by.
pub fn short_id(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// Sizes as Docker's progress writes them (`units.HumanSize`: 4 significant digits).
pub fn human_size(n: u64) -> String {
    berth_format::human_size(n, 4)
}

/// `[=====>        ]  1.23MB/4.56MB`, a 50-wide bar as Docker draws it.
pub fn bar(current: u64, total: u64) -> String {
    if total == 0 {
        return human_size(current);
    }
    let width = 50usize;
    let filled = ((current.min(total) as f64 / total as f64) * width as f64) as usize;
    let mut b = "=".repeat(filled);
    if filled < width {
        b.push('>');
        b.push_str(&" ".repeat(width - filled - 1));
    }
    format!("[{b}] {:>8}/{}", human_size(current), human_size(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bars_look_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(2_000_000), "2MB");
        assert_eq!(human_size(45_600), "45.6kB");
        let b = bar(50, 100);
        assert!(b.starts_with("[=========================>"), "{b}");
        assert!(b.ends_with("50B/100B"), "{b}");
        assert!(bar(100, 100).starts_with(&format!("[{}]", "=".repeat(50))));
    }

    #[test]
    fn a_short_id_is_twelve_hex_digits() {
        assert_eq!(short_id(&Digest::of(b"x")).len(), 12);
    }
}
