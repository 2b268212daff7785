//! A small `tracing` subscriber: events at or above a level become lines on stderr or in the
//! --log file, as text or as runc's JSON (`{"level","msg","time"}`), which containerd and podman
//! read back. Small on purpose: the runtime's peak RSS is mostly its own code pages.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

pub struct Logger {
    max: Level,
    json: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Logger {
    pub fn install(max: Level, json: bool, out: Box<dyn Write + Send>) {
        let _ = tracing::subscriber::set_global_default(Logger { max, json, out: Mutex::new(out) });
    }

    /// One log line for `msg` at `level`, in this logger's format.
    pub fn line(json: bool, level: &str, msg: &str) -> String {
        let time = berth_runtime::state::now_rfc3339();
        if json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level={level} msg={msg:?}")
        }
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut m = Message::default();
        event.record(&mut m);
        let level = event.metadata().level().as_str().to_lowercase();
        let line = Logger::line(self.json, &level, m.0.trim());
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
