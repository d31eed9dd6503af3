//! The dispatcher's account of its window: which receiver each POST in flight holds a slot
//! of, how many each receiver has, and which routes to pass over because theirs has no room.

use std::collections::HashMap;

/// The worker's view of its window: POSTs in flight per receiver, and which routes (waba and
/// number) were last seen going to which receiver, to pass over those that have no room.
#[derive(Default)]
pub(super) struct Window {
    pub(super) busy: HashMap<String, usize>,
    pub(super) routes: HashMap<String, String>,
    /// The receiver each task in flight holds a slot of: released when its POST is over,
    /// or when the task ends, however it ends.
    pub(super) slots: HashMap<tokio::task::Id, String>,
    /// A task could not write its outcome since the last look.
    pub(super) unrecorded: bool,
}

impl Window {
    /// The routes whose receiver is to be passed over: those with more than half their
    /// slots taken. Leasing for a receiver with one free slot would take a whole batch of
    /// its jobs and give all but one back, a write per job, on every finished POST; waiting
    /// until half are free keeps that to a couple of jobs per POST.
    pub(super) fn full_routes(&self, per_endpoint: usize) -> Vec<String> {
        self.routes
            .iter()
            .filter(|(_, url)| self.busy.get(*url).copied().unwrap_or(0) > per_endpoint / 2)
            .map(|(route, _)| route.clone())
            .collect()
    }

    /// A task's POST is over; true if that lets jobs waiting for its receiver go.
    pub(super) fn posted(&mut self, task: tokio::task::Id, per_endpoint: usize) -> bool {
        self.slots
            .remove(&task)
            .is_some_and(|url| self.release(&url, per_endpoint))
    }

    /// A task ended; true if that may let other jobs go (a status behind it, or room at its
    /// receiver).
    pub(super) fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
        per_endpoint: usize,
    ) -> bool {
        let (task, finished) = match done {
            Ok(done) => done,
            Err(error) => {
                // Never expected: the job's lease runs out and it is taken again; its slot
                // is freed all the same.
                tracing::error!(%error, "a webhook delivery task failed");
                let finished = Finished {
                    recorded: true,
                    settled_in_order: false,
                };
                (error.id(), finished)
            }
        };
        self.unrecorded |= !finished.recorded;
        self.posted(task, per_endpoint) || finished.settled_in_order
    }

    /// Frees a slot of `url`; true if that ends the passing over of its routes (jobs of it
    /// may be waiting for the room).
    pub(super) fn release(&mut self, url: &str, per_endpoint: usize) -> bool {
        let Some(n) = self.busy.get_mut(url) else {
            return false;
        };
        let was_full = *n == per_endpoint / 2 + 1;
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.busy.remove(url);
            // Nothing in flight there: its routes need no passing over.
            self.routes.retain(|_, to| to != url);
        }
        was_full
    }
}

/// What a delivery task reports.
pub(super) struct Finished {
    /// False if its outcome could not be recorded.
    pub(super) recorded: bool,
    /// It was a job with an `order_key` and is settled for good (delivered or dead): the
    /// next of its key may be due now.
    pub(super) settled_in_order: bool,
}
