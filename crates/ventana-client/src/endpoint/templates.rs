//! Template messages on the device: the approved text of the version a message names,
//! fetched from the relay's public registry once and kept (in memory, and in the store so
//! history renders without the relay), checked against the message's header, and filled with
//! the decrypted values; and a tap on one of its quick-reply buttons.
//!
//! The values come from the other end of the wire and the text from the relay, so neither is
//! trusted: every mismatch is a [`TemplateRenderError`], never a panic.

use super::{Application, Endpoint, REQUEST_WAIT, SendError, Sent, lock};
use crate::link::{LinkError, RelayLink};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use ventana_core::payload::{Content, Payload};
use ventana_core::protocol::{ErrorCode, Op, ProtocolError, Reply, TemplateVersionInfo};
use ventana_core::rules::EnvelopeKind;
use ventana_core::template::render::RenderedButtonKind;
use ventana_core::template::{
    DefinitionError, RenderError, Rendered, TemplateDefinition, TemplateHeader, render,
};
use ventana_core::{MessageId, PhoneNumber};
use ventana_store::endpoint::Direction;
use ventana_store::{EndpointStore, StoreError};

/// How many template versions an endpoint keeps in memory (the store keeps them all).
const MEMORY_VERSIONS: usize = 128;

/// Why a template message cannot be shown. [`is_transient`](Self::is_transient) tells "try
/// again later" from "this message will never render".
#[derive(Debug, thiserror::Error)]
pub enum TemplateRenderError {
    /// The version is not cached here and the relay cannot be asked now (not connected, no
    /// answer in time, failing on its side).
    #[error("the template is not cached and the relay cannot be reached now ({0})")]
    Unavailable(String),
    /// The local store failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The message carries no template values.
    #[error("the message is not a template message")]
    NotATemplate,
    /// Template values without the header naming the version they fill.
    #[error("the message does not say which template it fills")]
    MissingHeader,
    /// The relay has no approved version of that template from that business: it was never
    /// approved, or never existed.
    #[error("{name} version {version} is not an approved template of the sender")]
    UnknownVersion { name: String, version: u32 },
    /// The relay would not give the version for another reason.
    #[error("the relay refused the template: {0}")]
    Refused(ProtocolError),
    /// The version the relay (or the cache) holds names another template than the message.
    #[error("the template's {0} differs from what the message names")]
    Mismatch(&'static str),
    /// The fetched text is not a valid template.
    #[error("the template's text is unreadable: {0}")]
    Definition(DefinitionError),
    /// The message's values do not fit the template.
    #[error("the message's values do not fit the template: {0}")]
    Values(#[from] RenderError),
}

impl TemplateRenderError {
    /// Whether rendering again later may succeed (the relay or the store may be back).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Store(_))
    }
}

/// Why a quick-reply tap was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("no template message {0} from that business in the history")]
    NoSuchMessage(MessageId),
    #[error("message {0} cannot be opened from the history")]
    Unreadable(MessageId),
    #[error("the template cannot be shown: {0}")]
    Render(#[from] TemplateRenderError),
    #[error("the template has no button with index {0} (counted from 0)")]
    NoSuchButton(usize),
    #[error("the button with index {0} is not a quick reply")]
    NotQuickReply(usize),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Send(#[from] SendError),
}

/// A quick-reply tap that was sent: the message, and the label and payload it carried.
#[derive(Clone, Debug)]
pub struct Tapped {
    pub sent: Sent,
    pub text: String,
    pub payload: String,
}

/// A template version by the business that owns it, its id and its version.
type VersionKey = (PhoneNumber, String, u32);

/// The template versions one endpoint has fetched. Cheap to share with a background prefetch.
pub(super) struct TemplateCache {
    owner: PhoneNumber,
    store: Arc<dyn EndpointStore>,
    link: RelayLink,
    memory: Mutex<HashMap<VersionKey, Arc<TemplateDefinition>>>,
}

impl TemplateCache {
    pub(super) fn new(owner: PhoneNumber, store: Arc<dyn EndpointStore>, link: RelayLink) -> Self {
        Self {
            owner,
            store,
            link,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The definition of the version `header` names, sent by `business`: from memory, from
    /// the store, or from the relay (then kept in both). Wherever it comes from, it must be
    /// the template the header names.
    async fn definition(
        &self,
        business: &PhoneNumber,
        header: &TemplateHeader,
    ) -> Result<Arc<TemplateDefinition>, TemplateRenderError> {
        let key = (business.clone(), header.id.clone(), header.version);
        let remembered = lock(&self.memory).get(&key).cloned();
        if let Some(definition) = remembered {
            check(header, &header.id, header.version, &definition)?;
            return Ok(definition);
        }
        let cached = self
            .store
            .cached_template(&self.owner, business, &header.id, header.version)
            .await?;
        if let Some(text) = cached {
            let json: Value = serde_json::from_str(&text).map_err(|e| {
                TemplateRenderError::Definition(DefinitionError {
                    field: String::new(),
                    message: e.to_string(),
                })
            })?;
            let definition =
                TemplateDefinition::parse(&json).map_err(TemplateRenderError::Definition)?;
            check(header, &header.id, header.version, &definition)?;
            return Ok(self.remember(key, definition));
        }
        let info = self.fetch(business, header).await?;
        let json = definition_json(&info);
        let definition =
            TemplateDefinition::parse(&json).map_err(TemplateRenderError::Definition)?;
        check(header, &info.id, info.version, &definition)?;
        if let Err(e) = self
            .store
            .cache_template(
                &self.owner,
                business,
                &header.id,
                header.version,
                json.to_string(),
            )
            .await
        {
            tracing::warn!(owner = %self.owner, %business, id = %header.id, error = %e, "a template version was not cached");
        }
        Ok(self.remember(key, definition))
    }

    async fn fetch(
        &self,
        business: &PhoneNumber,
        header: &TemplateHeader,
    ) -> Result<TemplateVersionInfo, TemplateRenderError> {
        let op = Op::TemplateVersion {
            business: business.clone(),
            id: header.id.clone(),
            version: header.version,
        };
        match self.link.request(op, REQUEST_WAIT).await {
            Ok(Reply::TemplateVersion { template }) => Ok(template),
            Ok(other) => Err(TemplateRenderError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
            Err(LinkError::Refused(e)) if e.code == ErrorCode::NotFound => {
                Err(TemplateRenderError::UnknownVersion {
                    name: header.name.clone(),
                    version: header.version,
                })
            }
            Err(LinkError::Refused(e)) => Err(TemplateRenderError::Refused(e)),
            Err(e) => Err(TemplateRenderError::Unavailable(e.to_string())),
        }
    }

    fn remember(&self, key: VersionKey, definition: TemplateDefinition) -> Arc<TemplateDefinition> {
        let definition = Arc::new(definition);
        let mut memory = lock(&self.memory);
        if memory.len() >= MEMORY_VERSIONS
            && let Some(evicted) = memory.keys().next().cloned()
        {
            memory.remove(&evicted);
        }
        memory.insert(key, Arc::clone(&definition));
        definition
    }
}

/// The definition JSON of a fetched version, as [`TemplateDefinition::parse`] reads it (and
/// as the store caches it).
fn definition_json(info: &TemplateVersionInfo) -> Value {
    json!({
        "name": info.name,
        "language": info.language,
        "category": info.category,
        "parameter_format": info.parameter_format,
        "components": info.components,
    })
}

/// Checks that a version (its id and number, and its parsed text) is the one `header` names:
/// the relay checked the envelope's clear header, and the payload's header equals it, so the
/// text shown is the text the relay approved for exactly this message.
fn check(
    header: &TemplateHeader,
    id: &str,
    version: u32,
    definition: &TemplateDefinition,
) -> Result<(), TemplateRenderError> {
    let differs = if id != header.id {
        Some("id")
    } else if version != header.version {
        Some("version")
    } else if definition.name().as_str() != header.name {
        Some("name")
    } else if definition.language().as_str() != header.language {
        Some("language")
    } else if definition.category() != header.category {
        Some("category")
    } else {
        None
    };
    differs.map_or(Ok(()), |field| Err(TemplateRenderError::Mismatch(field)))
}

/// A message is a template message in all three places or in none: its kind, the template
/// header it carries, and its content. `Err` says what disagrees.
pub(super) fn check_template_shape(payload: &Payload) -> Result<(), &'static str> {
    let kind = payload.header.kind == EnvelopeKind::Template;
    let header = payload.header.template.is_some();
    let content = matches!(payload.content, Content::Template { .. });
    match (kind, header, content) {
        (true, true, true) | (false, false, false) => Ok(()),
        (true, false, _) => Err("a template message that names no template"),
        (true, true, false) => Err("a template message without template values"),
        (false, true, _) => Err("a template header on a message that is not a template"),
        (false, false, true) => Err("template values in a message that is not a template"),
    }
}

impl Endpoint {
    /// Renders a template message (received, or sent by this endpoint): the approved text of
    /// the version its header names, filled with its values. The version comes from memory,
    /// from the store, or from the relay, which is then asked once and remembered.
    pub async fn render_template(
        &self,
        payload: &Payload,
    ) -> Result<Rendered, TemplateRenderError> {
        let Content::Template { values } = &payload.content else {
            return Err(TemplateRenderError::NotATemplate);
        };
        let header = payload
            .header
            .template
            .as_ref()
            .ok_or(TemplateRenderError::MissingHeader)?;
        let definition = self
            .templates
            .definition(&payload.header.from, header)
            .await?;
        Ok(render(&definition, values)?)
    }

    /// Fetches the version a received template message names into the cache, in the
    /// background: the message renders later even if the relay is unreachable then. A failure
    /// is only logged; rendering asks again.
    pub(super) fn prefetch_template(&self, business: &PhoneNumber, header: &TemplateHeader) {
        let (templates, business, header) = (
            Arc::clone(&self.templates),
            business.clone(),
            header.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = templates.definition(&business, &header).await {
                tracing::debug!(%business, id = %header.id, version = header.version, error = %e, "template version not prefetched");
            }
        });
    }

    /// Taps quick-reply button `index` (its position in the template, from 0) of the template
    /// message `template_message` received from `business`: sends the button's label and
    /// payload (the label when it has none) back as an ordinary message replying to it, which
    /// the business receives as the Cloud API's `button` message.
    pub async fn tap_button(
        &self,
        business: &PhoneNumber,
        template_message: &MessageId,
        index: usize,
        app: &dyn Application,
    ) -> Result<Tapped, TapError> {
        let record = self
            .store
            .message(&self.owner, template_message)
            .await?
            .filter(|r| {
                r.direction == Direction::Inbound
                    && &r.peer == business
                    && r.kind == EnvelopeKind::Template
            })
            .ok_or_else(|| TapError::NoSuchMessage(template_message.clone()))?;
        let payload = self
            .open_body(&record)
            .ok_or_else(|| TapError::Unreadable(template_message.clone()))?;
        let rendered = self.render_template(&payload).await?;
        let button = rendered
            .buttons
            .iter()
            .find(|b| b.index == index)
            .ok_or(TapError::NoSuchButton(index))?;
        let RenderedButtonKind::QuickReply { payload } = &button.kind else {
            return Err(TapError::NotQuickReply(index));
        };
        let text = button.text.clone();
        let payload = payload.clone().unwrap_or_else(|| text.clone());
        let content = Content::Button {
            text: text.clone(),
            payload: payload.clone(),
        };
        let sent = self
            .send_message(business, content, Some(template_message.clone()), app)
            .await?;
        Ok(Tapped {
            sent,
            text,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ventana_core::payload::Header;
    use ventana_core::template::{BoundTemplate, Category};

    fn header() -> TemplateHeader {
        TemplateHeader {
            id: "1017".into(),
            name: "order_update".into(),
            language: "en_US".into(),
            version: 2,
            category: Category::Utility,
        }
    }

    fn definition() -> TemplateDefinition {
        let info = TemplateVersionInfo {
            id: "1017".into(),
            name: "order_update".into(),
            language: "en_US".into(),
            version: 2,
            category: Category::Utility,
            parameter_format: "POSITIONAL".into(),
            components: json!([
                {"type": "BODY", "text": "Order {{1}} is on its way.",
                 "example": {"body_text": [["#4821"]]}},
            ]),
        };
        TemplateDefinition::parse(&definition_json(&info)).unwrap()
    }

    #[test]
    fn a_version_is_the_one_the_header_names_only_if_every_field_agrees() {
        let (h, def) = (header(), definition());
        assert!(check(&h, "1017", 2, &def).is_ok());
        let differs = |h: &TemplateHeader, id: &str, version| match check(h, id, version, &def) {
            Err(TemplateRenderError::Mismatch(field)) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(differs(&h, "1018", 2), "id");
        assert_eq!(differs(&h, "1017", 1), "version");
        let renamed = TemplateHeader {
            name: "order_update_v2".into(),
            ..header()
        };
        assert_eq!(differs(&renamed, "1017", 2), "name");
        let spanish = TemplateHeader {
            language: "es".into(),
            ..header()
        };
        assert_eq!(differs(&spanish, "1017", 2), "language");
        let marketing = TemplateHeader {
            category: Category::Marketing,
            ..header()
        };
        assert_eq!(differs(&marketing, "1017", 2), "category");
    }

    #[test]
    fn a_fetched_version_round_trips_through_its_cached_json() {
        let def = definition();
        let cached = serde_json::to_string(&serde_json::to_value(&def).unwrap()).unwrap();
        let again = TemplateDefinition::parse(&serde_json::from_str(&cached).unwrap()).unwrap();
        assert_eq!(again, def);
    }

    fn payload(kind: EnvelopeKind, template: Option<TemplateHeader>, content: Content) -> Payload {
        Payload {
            v: 1,
            header: Header {
                id: MessageId::generate(),
                from: "15550001111".parse().unwrap(),
                to: "34600111222".parse().unwrap(),
                kind,
                template,
            },
            profile_name: None,
            content,
            reply_to: None,
        }
    }

    #[test]
    fn kind_header_and_content_must_all_say_template_or_none_may() {
        let values = || Content::Template {
            values: BoundTemplate {
                header: None,
                body: vec!["#4821".into()],
                buttons: vec![],
            },
        };
        let text = || Content::Text {
            body: "hi".into(),
            preview_url: false,
        };
        let (t, m) = (EnvelopeKind::Template, EnvelopeKind::Message);
        assert!(check_template_shape(&payload(t, Some(header()), values())).is_ok());
        assert!(check_template_shape(&payload(m, None, text())).is_ok());
        for broken in [
            payload(t, None, values()),
            payload(t, Some(header()), text()),
            payload(m, Some(header()), values()),
            payload(m, Some(header()), text()),
            payload(m, None, values()),
            payload(t, None, text()),
        ] {
            assert!(check_template_shape(&broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn only_an_unreachable_relay_or_store_is_worth_retrying() {
        assert!(TemplateRenderError::Unavailable("timeout".into()).is_transient());
        assert!(!TemplateRenderError::Mismatch("name").is_transient());
        assert!(
            !TemplateRenderError::UnknownVersion {
                name: "x".into(),
                version: 1
            }
            .is_transient()
        );
        assert!(!TemplateRenderError::Values(RenderError::Header).is_transient());
    }
}
