//! Events: every change the engine makes is published here (containers, execs, images,
//! volumes, networks), kept in a bounded history for `since`, and delivered to each
//! subscriber in order. A subscriber that falls behind the live channel catches up from the
//! history, so a slow reader loses nothing the history still holds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use berth_api::events::EventStream;
use berth_models::system::{EventActor, EventMessage};
use tokio::sync::broadcast;

/// Events kept for `since` and as a slow reader's safety net (Docker keeps 256). Each is a
/// few hundred bytes: bounded so, berthd's memory stays flat however long it runs.
const HISTORY: usize = 512;
/// Events in flight to each subscriber before it must catch up from the history.
const CHANNEL: usize = 128;

/// One event and its place in the sequence.
type Numbered = (u64, Arc<EventMessage>);

pub(crate) struct Events {
    tx: broadcast::Sender<Numbered>,
    history: Mutex<(u64, VecDeque<Numbered>)>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(CHANNEL).0, history: Mutex::new((0, VecDeque::new())) }
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl Events {
    /// Publish an event of `typ` (`container`, `image`, …) about `id`.
    pub fn publish(&self, typ: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let nanos = now_nanos();
        // The old fields, for clients that still read them (Docker sends them for these).
        let (status, old_id, from) = match typ {
            "container" => (Some(action.to_string()), Some(id.to_string()), attributes.get("image").cloned()),
            "image" => (Some(action.to_string()), Some(id.to_string()), None),
            _ => (None, None, None),
        };
        let msg = Arc::new(EventMessage {
            status,
            id: old_id,
            from,
            typ: typ.to_string(),
            action: action.to_string(),
            actor: EventActor { id: id.to_string(), attributes },
            scope: "local".into(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        });
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.0 += 1;
        let n = (h.0, msg);
        h.1.push_back(n.clone());
        if h.1.len() > HISTORY {
            h.1.pop_front();
        }
        // Sent under the lock: subscribers see the history and the channel in one order.
        let _ = self.tx.send(n);
    }

    /// How many clients follow the events now (`info`'s `NEventsListener`).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Kept events from `since` (None: none), then live ones, until `until`.
    pub fn subscribe(self: &Arc<Self>, since: Option<f64>, until: Option<f64>) -> EventStream {
        let (kept, rx) = {
            let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            let kept: Vec<Numbered> = match since {
                Some(s) => h.1.iter().filter(|(_, e)| e.time_nano as f64 / 1e9 >= s).cloned().collect(),
                None => Vec::new(),
            };
            (kept, self.tx.subscribe())
        };
        let within = move |e: &EventMessage| until.is_none_or(|u| e.time_nano as f64 / 1e9 <= u);
        let last = kept.last().map(|(n, _)| *n).unwrap_or(0);
        let kept: VecDeque<Numbered> = kept.into_iter().filter(|(_, e)| within(e)).collect();
        let deadline = until.map(|u| {
            let now = now_nanos() as f64 / 1e9;
            tokio::time::Instant::now() + std::time::Duration::from_secs_f64((u - now).max(0.0))
        });
        struct St {
            events: Arc<Events>,
            kept: VecDeque<Numbered>,
            rx: broadcast::Receiver<Numbered>,
            last: u64,
            deadline: Option<tokio::time::Instant>,
        }
        let st = St { events: Arc::clone(self), kept, rx, last, deadline };
        Box::pin(futures_util::stream::unfold(st, move |mut st| async move {
            loop {
                if let Some((n, e)) = st.kept.pop_front() {
                    st.last = st.last.max(n);
                    return Some((e, st));
                }
                let next = match st.deadline {
                    Some(d) => match tokio::time::timeout_at(d, st.rx.recv()).await {
                        Ok(r) => r,
                        Err(_) => return None,
                    },
                    None => st.rx.recv().await,
                };
                match next {
                    Ok((n, e)) if n > st.last => {
                        st.last = n;
                        if within(&e) {
                            return Some((e, st));
                        }
                        return None;
                    }
                    Ok(_) => continue,
                    // Behind: catch up from the history, then go on live.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let h = st.events.history.lock().unwrap_or_else(|p| p.into_inner());
                        st.kept = h.1.iter().filter(|(n, e)| *n > st.last && within(e)).cloned().collect();
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn attrs(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("name".to_string(), name.to_string())])
    }

    #[tokio::test]
    async fn a_slow_reader_loses_nothing_the_history_holds() {
        let ev = Arc::new(Events::default());
        let mut s = ev.subscribe(None, None);
        // More than the channel holds (as much as the history does), before the reader reads.
        const { assert!(HISTORY > CHANNEL * 3) };
        for i in 0..HISTORY {
            ev.publish("container", "start", &format!("c{i}"), attrs("x"));
        }
        for i in 0..HISTORY {
            let e = s.next().await.unwrap();
            assert_eq!(e.actor.id, format!("c{i}"));
        }
    }

    #[tokio::test]
    async fn listeners_are_counted_while_they_follow() {
        let ev = Arc::new(Events::default());
        let s = ev.subscribe(None, None);
        assert_eq!(ev.listeners(), 1);
        drop(s);
        assert_eq!(ev.listeners(), 0);
    }

    #[tokio::test]
    async fn since_replays_and_until_ends() {
        let ev = Arc::new(Events::default());
        ev.publish("image", "pull", "busybox:latest", attrs("busybox"));
        let t = now_nanos() as f64 / 1e9;
        // Kept ones from `since`, then live ones until `until`.
        let mut s = ev.subscribe(Some(t - 10.0), Some(t + 0.3));
        ev.publish("container", "create", "c1", attrs("a"));
        let got: Vec<String> = (&mut s).map(|e| e.action.clone()).collect().await;
        assert_eq!(got, ["pull", "create"]);
        // Nothing from before `since`; an `until` in the past ends at once.
        let s = ev.subscribe(Some(t + 1000.0), Some(t - 1.0));
        assert_eq!(s.count().await, 0);
        let e = ev.history.lock().unwrap().1[0].1.clone();
        assert_eq!((e.status.as_deref(), e.id.as_deref(), e.scope.as_str()), (Some("pull"), Some("busybox:latest"), "local"));
    }
}
