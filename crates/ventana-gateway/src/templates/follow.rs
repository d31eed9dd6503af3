//! Follows the relay's template events and queues a `message_template_status_update`
//! webhook for each status change a business should hear of.
//!
//! Each business's position in its event stream (the `seq` of the last event handled) is a
//! cursor in the gateway's store. A round reads the cursor, asks the relay for what follows
//! (as one of the business's numbers), and moves the cursor and queues the webhooks in one
//! compare-and-swap, so an event is queued once even when nodes race: the node that loses
//! the swap drops its copy and moves on. Jobs are named `template.<waba>.<seq>`, so a round
//! repeated after a crash cannot queue an event twice either.
//!
//! Only the node receiving for one of the business's numbers follows it (see `ownership`),
//! so followers do not multiply with nodes. It looks every [`POLL_EVERY`], and at once after
//! this node's own template requests.

use crate::webhook::payload::{self, TemplateStatusUpdate};
use crate::{Gateway, read};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use ventana_client::{Endpoint, LinkError};
use ventana_core::protocol::{Op, Reply, TemplateEventInfo};
use ventana_core::{UnixTime, WabaId};
use ventana_store::StoreError;
use ventana_store::endpoint::WebhookJob;

/// How often the relay is asked for new events without being woken.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Events asked for at once.
const PAGE: u32 = 100;
/// Pages taken for one business per round, so one with a long backlog does not hold up the
/// others; the next round goes on where this one stopped.
const PAGES_PER_ROUND: usize = 10;
/// How long to wait for the relay's answer.
const RELAY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("relay: {0}")]
    Relay(#[from] LinkError),
    #[error("the relay answered template events with {0}")]
    Unexpected(String),
    #[error("the relay's events went backwards: {last} after cursor {cursor}")]
    Backwards { cursor: i64, last: i64 },
}

/// The `event` a change is announced with, or `None` for a change that is not announced.
///
/// - A creation (no previous status) is not announced: Meta's webhook reports "changes to
///   the status of an existing template", and its triggers are review outcomes; the creator
///   reads `PENDING` in the answer to its request. When the platform reviews the template
///   at once, that review is a change of its own and is announced.
/// - A change to the same status (an edit of a template still pending) is not one.
/// - Otherwise the event is [`TemplateStatus::event`](ventana_core::template::TemplateStatus::event):
///   a deletion is `PENDING_DELETION`, an edit back to review `PENDING`, and a paused
///   template approved again `APPROVED`. Meta keeps `REINSTATED` for templates no longer
///   flagged or disabled, and announces the end of a pause as `APPROVED`.
pub(crate) fn announced_as(event: &TemplateEventInfo) -> Option<&'static str> {
    match event.from {
        Some(from) if from != event.to => Some(event.to.event()),
        _ => None,
    }
}

/// The stable id of the webhook job of an event.
pub(crate) fn job_id(waba: &WabaId, seq: i64) -> String {
    format!("template.{waba}.{seq}")
}

/// Runs until `shutdown` turns true (or its sender is dropped).
pub(crate) async fn follow(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        for (waba, endpoint) in followed(&gateway) {
            follow_business(&gateway, &waba, &endpoint).await;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            () = gateway.template_events_due.notified() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}

/// The businesses this node follows, each with a connected number it receives for.
fn followed(gateway: &Gateway) -> Vec<(WabaId, Arc<Endpoint>)> {
    let mut by_waba: HashMap<WabaId, Arc<Endpoint>> = HashMap::new();
    for hosted in read(&gateway.numbers).values() {
        let link = hosted.endpoint.link();
        if link.is_receiving() && link.is_connected() {
            by_waba
                .entry(hosted.record.waba_id.clone())
                .or_insert_with(|| Arc::clone(&hosted.endpoint));
        }
    }
    by_waba.into_iter().collect()
}

async fn follow_business(gateway: &Gateway, waba: &WabaId, endpoint: &Endpoint) {
    for _ in 0..PAGES_PER_ROUND {
        match follow_page(gateway, waba, endpoint).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(FollowError::Relay(error)) => {
                // A relay that is restarting, or does not answer template events yet: the
                // next round asks again, so there is nothing to shout about every second.
                tracing::debug!(%waba, %error, "template events not read");
                return;
            }
            Err(error) => {
                tracing::warn!(%waba, %error, "template events not followed");
                return;
            }
        }
    }
}

/// Handles one page of events; true if more may follow at once.
async fn follow_page(
    gateway: &Gateway,
    waba: &WabaId,
    endpoint: &Endpoint,
) -> Result<bool, FollowError> {
    let cursor = gateway.store.template_cursor(waba).await?;
    let op = Op::TemplateEvents {
        after: cursor,
        limit: PAGE,
    };
    let events = match endpoint.link().request(op, RELAY_WAIT).await? {
        Reply::TemplateEvents { events } => events,
        other => return Err(FollowError::Unexpected(format!("{other:?}"))),
    };
    let Some(last) = events.iter().map(|e| e.seq).max() else {
        return Ok(false);
    };
    if last <= cursor {
        return Err(FollowError::Backwards { cursor, last });
    }
    let now = UnixTime::now();
    let jobs: Vec<WebhookJob> = events
        .iter()
        .filter(|e| e.seq > cursor)
        .filter_map(|e| {
            let name = announced_as(e)?;
            let body = payload::template_status_update(waba, TemplateStatusUpdate::of(e, name));
            Some(gateway.business_webhook_job(
                waba,
                job_id(waba, e.seq),
                Some(format!("template/{}", e.template_id)),
                &body,
                now,
            ))
        })
        .collect();
    let queued = !jobs.is_empty();
    if !gateway
        .store
        .advance_template_cursor(waba, cursor, last, jobs)
        .await?
    {
        // Another node handled these events first.
        return Ok(false);
    }
    if queued {
        gateway.webhooks_due.notify_one();
    }
    Ok(events.len() >= PAGE as usize)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ventana_core::template::TemplateStatus::{self, *};

    fn event(from: Option<TemplateStatus>, to: TemplateStatus) -> TemplateEventInfo {
        TemplateEventInfo {
            seq: 42,
            template_id: "1689556908129832".into(),
            name: "order_update".into(),
            language: "en_US".into(),
            version: 1,
            from,
            to,
            reason: None,
            at: UnixTime(1_750_000_000),
        }
    }

    #[test]
    fn a_creation_is_not_announced_but_the_review_that_follows_is() {
        assert_eq!(announced_as(&event(None, Pending)), None);
        assert_eq!(
            announced_as(&event(Some(Pending), Approved)),
            Some("APPROVED")
        );
        assert_eq!(
            announced_as(&event(Some(Pending), Rejected)),
            Some("REJECTED")
        );
    }

    #[test]
    fn review_and_business_changes_are_announced_with_metas_event_names() {
        assert_eq!(announced_as(&event(Some(Approved), Paused)), Some("PAUSED"));
        assert_eq!(
            announced_as(&event(Some(Paused), Approved)),
            Some("APPROVED")
        );
        assert_eq!(
            announced_as(&event(Some(Approved), Disabled)),
            Some("DISABLED")
        );
        assert_eq!(
            announced_as(&event(Some(Approved), Pending)),
            Some("PENDING")
        );
        assert_eq!(
            announced_as(&event(Some(Rejected), Deleted)),
            Some("PENDING_DELETION")
        );
    }

    #[test]
    fn an_edit_of_a_template_still_pending_is_no_change() {
        assert_eq!(announced_as(&event(Some(Pending), Pending)), None);
    }

    #[test]
    fn job_ids_name_the_business_and_the_event() {
        assert_eq!(
            job_id(&"102290129340398".parse().unwrap(), 42),
            "template.102290129340398.42"
        );
    }
}
