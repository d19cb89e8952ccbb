//! The change feed: a ping each time a write may have committed, by this
//! process or any other, on every backend. SQLite announces a commit by
//! touching a marker file that an OS notification (inotify) reports;
//! PostgreSQL by NOTIFY, heard on a LISTEN connection of its own. Pings are
//! coalesced: one waiting ping stands for any number of writes, so a
//! consumer reads what changed (the log after its last seq), never counts
//! pings.

use std::sync::mpsc::{Receiver, RecvError, RecvTimeoutError, TryRecvError};
use std::time::Duration;

/// A live feed of change pings; the watch behind it stops when it drops.
pub struct Changes {
    rx: Receiver<()>,
    /// What keeps the pings coming (a file watcher), if the sender does
    /// not keep itself alive.
    _source: Option<Box<dyn Send>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    /// A feed fed by `rx`, alive as long as `source` is.
    pub fn new(rx: Receiver<()>, source: Option<Box<dyn Send>>) -> Changes {
        Changes {
            rx,
            _source: source,
        }
    }

    /// Waits for the next ping; an error means the feed ended.
    pub fn recv(&self) -> Result<(), RecvError> {
        self.rx.recv()
    }

    pub fn recv_timeout(&self, wait: Duration) -> Result<(), RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }

    pub fn try_recv(&self) -> Result<(), TryRecvError> {
        self.rx.try_recv()
    }

    /// Takes every ping already waiting (they all mean "look again").
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Calls `wake` for each ping, on a thread of its own, until the feed
    /// ends or `wake` returns false. For a consumer that waits on a channel
    /// of its own (the engine's loop, the server's hub).
    pub fn forward(
        self,
        name: &str,
        mut wake: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while self.recv().is_ok() {
                    self.drain();
                    if !wake() {
                        return;
                    }
                }
            })
    }
}
