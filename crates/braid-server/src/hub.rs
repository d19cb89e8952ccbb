//! The event hub: one task reads new events from the store's log and fans
//! each out, serialised once, through a bounded broadcast ring to every
//! stream (WebSocket and SSE). Subscribers resume from a seq by replaying the
//! log, then follow the ring; one that falls further behind than the ring
//! holds is told to resync instead of being buffered for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use braid_core::{Event, TaskId};
use braid_store::Store;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::metric;
use braid_app::wire::EventView;

/// Bounds of the streams. Every one is a setting (`[server]` in config).
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// How many events a subscriber may fall behind before it is
    /// disconnected and told to resync (the broadcast ring's size).
    pub send_queue: usize,
    /// How far back (in events) a resume may replay; a client further
    /// behind gets `recovered: false` and must reload.
    pub resume_window: i64,
    /// A write to a client that takes longer than this disconnects it as a
    /// slow consumer.
    pub send_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            send_queue: 1024,
            resume_window: 10_000,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// One event as sent: its seq, the rooms it belongs to, and its JSON text.
#[derive(Debug)]
pub struct Frame {
    pub seq: i64,
    pub rooms: Box<[Box<str>]>,
    /// Cheap to clone: every subscriber sends the same bytes.
    pub json: axum::extract::ws::Utf8Bytes,
}

/// The wire form of an event on a stream: `{"type":"event", ...EventView}`.
#[derive(Serialize)]
struct EventMsg<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(flatten)]
    event: &'a EventView,
}

/// The first message on every stream.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hello {
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// True when every event after the requested seq will be replayed;
    /// false when history no longer reaches back (reload, then follow).
    pub recovered: bool,
    /// The newest seq in the log when the stream started.
    pub last_seq: i64,
}

pub struct Hub {
    store: Arc<dyn Store>,
    tx: broadcast::Sender<Arc<Frame>>,
    wake: std::sync::mpsc::SyncSender<()>,
    published: AtomicI64,
    closing: watch::Sender<bool>,
    pub config: StreamConfig,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("published", &self.published.load(Ordering::Relaxed))
            .finish()
    }
}

/// Which rooms a subscriber listens to. `project` is every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rooms(Vec<Box<str>>);

impl Rooms {
    pub const MAX: usize = 32;

    /// Parses `project`, `epic:ID`, `task:ID`, `label:NAME`, comma-separated.
    pub fn parse(s: &str) -> Result<Rooms, crate::Error> {
        let mut out = Vec::new();
        for r in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let ok = match r.split_once(':') {
                None => r == "project",
                Some(("epic" | "task", id)) => TaskId::parse(id).is_ok(),
                Some(("label", l)) => !l.is_empty(),
                Some(_) => false,
            };
            if !ok {
                return Err(crate::Error::Invalid(format!(
                    "room {r:?} is not one of project, epic:ID, task:ID, label:NAME"
                )));
            }
            out.push(Box::from(r));
        }
        if out.len() > Self::MAX {
            return Err(crate::Error::Invalid(format!(
                "at most {} rooms per stream",
                Self::MAX
            )));
        }
        if out.is_empty() {
            out.push(Box::from("project"));
        }
        Ok(Rooms(out))
    }

    fn matches(&self, frame: &Frame) -> bool {
        self.0.iter().any(|r| frame.rooms.contains(r))
    }
}

impl Hub {
    /// Starts the hub's pump. Events appended after `last_seq()` at this
    /// moment are fanned out as they commit: the store's change feed wakes
    /// the hub for writes of any process (and, on PostgreSQL, any node),
    /// and [`Hub::wake`] for this process's own.
    pub fn start(
        store: Arc<dyn Store>,
        config: StreamConfig,
    ) -> Result<Arc<Hub>, braid_store::Error> {
        // The feed starts before the head is read: nothing committed in
        // between is missed.
        let changes = store.changes()?;
        let head = store.last_seq()?;
        let (tx, _) = broadcast::channel(config.send_queue.max(1));
        let (wake, wakes) = std::sync::mpsc::sync_channel(1);
        let hub = Arc::new(Hub {
            store,
            tx,
            wake,
            published: AtomicI64::new(head),
            closing: watch::channel(false).0,
            config,
        });
        let h = hub.clone();
        std::thread::Builder::new()
            .name("braid-hub".into())
            .spawn(move || pump(h, wakes))
            .map_err(|e| braid_store::Error::backend_from("starting the event hub", e))?;
        let weak = Arc::downgrade(&hub);
        changes
            .forward("braid-hub-feed", move || match weak.upgrade() {
                Some(h) => {
                    h.wake();
                    true
                }
                None => false,
            })
            .map_err(|e| braid_store::Error::backend_from("starting the change feed", e))?;
        Ok(hub)
    }

    /// Something may have been appended to the log: read it and fan it out.
    /// Wakes coalesce; calling this often costs nothing.
    pub fn wake(&self) {
        // A full slot already holds a wake-up.
        let _ = self.wake.try_send(());
    }

    /// The highest seq fanned out so far.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    /// Tells every stream to close (server shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
        // A full slot already holds a wake-up.
        let _ = self.wake.try_send(());
    }

    /// Changes to true when the server shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Starts a subscription: live events from now, or, with `after`, a
    /// replay of everything after that seq (when the window reaches back)
    /// followed by live events. The subscription listens before it reads
    /// the log, so nothing falls between replay and live.
    pub async fn subscribe(
        self: &Arc<Self>,
        after: Option<i64>,
        rooms: Rooms,
    ) -> Result<(Hello, Subscription), braid_store::Error> {
        let rx = self.tx.subscribe();
        let store = self.store.clone();
        let head = tokio::task::spawn_blocking(move || store.last_seq())
            .await
            .map_err(|e| braid_store::Error::backend_from("reading the log's head", e))??;
        let (recovered, last) = match after {
            None => (true, head),
            Some(a) if a >= 0 && a <= head && head - a <= self.config.resume_window => (true, a),
            Some(_) => (false, head),
        };
        let sub = Subscription {
            hub: self.clone(),
            rx,
            rooms,
            last,
            replay_to: if recovered { head } else { last },
            page: std::collections::VecDeque::new(),
            closing: self.closing.subscribe(),
        };
        Ok((
            Hello {
                ty: "hello",
                recovered,
                last_seq: head,
            },
            sub,
        ))
    }

    /// Serialises events and works out their rooms: `project`, the task's
    /// own `task:ID`, `epic:ID` for the task and each ancestor, and
    /// `label:NAME` for its labels. Lookups are shared within the batch.
    fn frames(&self, events: &[Event]) -> Vec<Arc<Frame>> {
        let mut seen: HashMap<TaskId, Vec<Box<str>>> = HashMap::new();
        events
            .iter()
            .map(|e| {
                let mut rooms: Vec<Box<str>> = vec![Box::from("project")];
                if let Some(id) = &e.task {
                    let task_rooms = seen
                        .entry(id.clone())
                        .or_insert_with(|| task_rooms(self.store.as_ref(), id));
                    rooms.extend(task_rooms.iter().cloned());
                }
                let out = EventView::from(e);
                let json = serde_json::to_string(&EventMsg {
                    ty: "event",
                    event: &out,
                })
                .unwrap_or_default();
                Arc::new(Frame {
                    seq: e.seq,
                    rooms: rooms.into_boxed_slice(),
                    json: axum::extract::ws::Utf8Bytes::from(json),
                })
            })
            .collect()
    }
}

/// The rooms a task's events go to besides `project`. The parent chain is
/// walked with a loop (no recursion) and stops at a repeat.
fn task_rooms(store: &dyn Store, id: &TaskId) -> Vec<Box<str>> {
    let mut rooms = vec![Box::from(format!("task:{id}"))];
    let Ok(task) = store.task(id) else {
        return rooms;
    };
    rooms.extend(task.labels.iter().map(|l| Box::from(format!("label:{l}"))));
    rooms.push(Box::from(format!("epic:{id}")));
    let mut next = task.parent;
    let mut hops = 0;
    while let Some(p) = next.take() {
        hops += 1;
        if hops > 10_000 {
            break;
        }
        rooms.push(Box::from(format!("epic:{p}")));
        next = store.task(&p).ok().and_then(|t| t.parent);
    }
    rooms
}

/// Reads what was appended since the last fan-out whenever woken. Runs on
/// its own thread: the fan-out of one event wakes every stream's task, and
/// the next event must not wait in the runtime's queue behind them. Wakes
/// coalesce in a one-slot channel, and one that lands while reading leaves
/// the slot full, so none is lost.
fn pump(h: Arc<Hub>, wakes: std::sync::mpsc::Receiver<()>) {
    const PAGE: usize = 1000;
    while wakes.recv().is_ok() && !h.is_closing() {
        loop {
            let events = match h.store.events(h.published(), PAGE) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %braid_core::error::chain(&e), "braid-server: reading events");
                    break;
                }
            };
            let frames = h.frames(&events);
            let Some(last) = frames.last().map(|f| f.seq) else {
                break;
            };
            let n = frames.len();
            for f in frames {
                // No subscribers is fine: nothing to deliver.
                let _ = h.tx.send(f);
            }
            metric::events_published(n);
            h.published.store(last, Ordering::Release);
            if n < PAGE {
                break;
            }
        }
    }
}

/// What a stream sends next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<Frame>),
    /// The subscriber fell too far behind; it must reload from `last_seq`.
    Resync {
        last_seq: i64,
    },
    /// The server is shutting down.
    Closing,
}

/// One stream's position: replaying the log, then following the ring.
pub struct Subscription {
    hub: Arc<Hub>,
    rx: broadcast::Receiver<Arc<Frame>>,
    rooms: Rooms,
    /// The highest seq sent (or skipped); anything at or below is a duplicate.
    last: i64,
    replay_to: i64,
    page: std::collections::VecDeque<Arc<Frame>>,
    closing: watch::Receiver<bool>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("last", &self.last)
            .finish()
    }
}

impl Subscription {
    pub fn set_rooms(&mut self, rooms: Rooms) {
        self.rooms = rooms;
    }

    pub fn last(&self) -> i64 {
        self.last
    }

    /// The next event for this subscriber. Cancel-safe: state changes only
    /// once a step completes.
    pub async fn next(&mut self) -> Next {
        const PAGE: usize = 256;
        loop {
            if *self.closing.borrow() {
                return Next::Closing;
            }
            if let Some(f) = self.page.pop_front() {
                self.last = f.seq;
                if self.rooms.matches(&f) {
                    return Next::Event(f);
                }
                continue;
            }
            if self.last < self.replay_to {
                let (hub, after) = (self.hub.clone(), self.last);
                let read = tokio::task::spawn_blocking(move || {
                    let events = hub.store.events(after, PAGE)?;
                    Ok::<_, braid_store::Error>(hub.frames(&events))
                })
                .await;
                match read {
                    Ok(Ok(frames)) if !frames.is_empty() => {
                        self.page.extend(frames);
                        continue;
                    }
                    Ok(Ok(_)) => {
                        self.replay_to = self.last;
                        continue;
                    }
                    _ => {
                        return Next::Resync {
                            last_seq: self.last,
                        };
                    }
                }
            }
            tokio::select! {
                biased;
                r = self.rx.recv() => match r {
                    Ok(f) if f.seq <= self.last => continue,
                    Ok(f) => {
                        self.last = f.seq;
                        if self.rooms.matches(&f) {
                            return Next::Event(f);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Next::Resync { last_seq: self.last };
                    }
                    Err(broadcast::error::RecvError::Closed) => return Next::Closing,
                },
                _ = self.closing.changed() => return Next::Closing,
            }
        }
    }
}
