//! The change feed: a bounded stream of "this worker changed" hints fed by a background task.
//!
//! Hints are coalesced rather than queued without limit: when the reader is slow, a full
//! buffer turns into one `Change::Unknown`, which tells the reader to re-read everything.

use std::future::Future;

use tokio::sync::mpsc;

use crate::Change;

const FEED_BUFFER: usize = 256;

/// Receives change hints; dropping it stops the background task.
pub struct ChangeFeed {
    receiver: mpsc::Receiver<Change>,
    task: tokio::task::JoinHandle<()>,
}

/// The producer side handed to a dialect's feed task.
pub(crate) struct ChangeSender {
    sender: mpsc::Sender<Change>,
}

impl ChangeSender {
    /// Sends a hint; returns false once nobody listens any more.
    pub(crate) fn send(&self, change: Change) -> bool {
        match self.sender.try_send(change) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The reader is behind; it will re-read once it catches up to an `Unknown`.
                let _ = self.sender.try_send(Change::Unknown);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl ChangeFeed {
    pub(crate) fn spawn<F, Fut>(producer: F) -> ChangeFeed
    where
        F: FnOnce(ChangeSender) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(FEED_BUFFER);
        let task = tokio::spawn(producer(ChangeSender { sender }));
        ChangeFeed { receiver, task }
    }

    /// Waits for the next hint; `None` if the feed's task ended.
    pub async fn next(&mut self) -> Option<Change> {
        self.receiver.recv().await
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}
