//! An end user's device: the [`Application`] for a person's client. What it shows is data
//! the engine gives: a message's [`Payload`](ventana_core::payload::Payload), a template
//! filled in with its approved text ([`Endpoint::render_template`]); laying it out for a
//! screen is the host's part.

use crate::ClientError;
use crate::endpoint::{Application, Endpoint, Inbound, Settlement};
use async_trait::async_trait;
use tokio::sync::mpsc;
use ventana_store::endpoint::AppRecord;

/// A person's device. The engine already keeps the history; this only reports live events
/// (to a terminal, a UI) once they are durable.
#[derive(Default)]
pub struct UserDevice {
    live: Option<mpsc::UnboundedSender<Inbound>>,
}

impl UserDevice {
    /// A device that reports each committed inbound event on the returned channel.
    pub fn with_live_events() -> (Self, mpsc::UnboundedReceiver<Inbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { live: Some(tx) }, rx)
    }
}

#[async_trait]
impl Application for UserDevice {
    async fn inbound(
        &self,
        _endpoint: &Endpoint,
        _event: &Inbound,
    ) -> Result<Vec<AppRecord>, ClientError> {
        Ok(Vec::new())
    }

    async fn settled(
        &self,
        _endpoint: &Endpoint,
        _settlement: &Settlement,
    ) -> Result<Vec<AppRecord>, ClientError> {
        Ok(Vec::new())
    }

    fn committed(&self, _endpoint: &Endpoint, event: &Inbound) {
        if let Some(live) = &self.live {
            let _ = live.send(event.clone());
        }
    }
}
