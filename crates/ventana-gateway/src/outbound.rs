//! Sending for a business: a parsed send request resolved against the relay's template
//! registry into what the number's endpoint encrypts, now or when its schedule fires.
//!
//! A template send is checked here first, so the business hears 132001/132000/132012/
//! 132015/132016 at once with the details; the relay checks the template's clear header
//! again when it accepts the envelope (a template paused in between is refused there).

use crate::events::GatewayEvents;
use crate::graph::error::GraphError;
use crate::graph::send::SendRequest;
use crate::{Gateway, Hosted, aad, templates};
use std::sync::Arc;
use ventana_client::{Outgoing, SendError, Sent};
use ventana_core::payload::Content;
use ventana_core::protocol::{ErrorCode, Op, ProtocolError, Reply, TemplateInfo, TemplateQuery};
use ventana_core::rules::RuleViolation;
use ventana_core::template::{
    BoundTemplate, SendTemplate, TemplateDefinition, TemplateHeader, TemplateStatus, bind,
};
use ventana_core::{CloudError, CloudErrorKind, MessageId, UnixTime};

/// Resolves a text or template send request (not a mark-as-read) for `hosted` into the
/// message to send under `id`. `by_person`: the request came with a person's token, so a
/// free-form message is a reply by hand (`Submission::manual`).
pub(crate) async fn prepare(
    hosted: &Hosted,
    request: &SendRequest,
    id: MessageId,
    by_person: bool,
) -> Result<Outgoing, GraphError> {
    match request {
        SendRequest::Text {
            to,
            body,
            preview_url,
            reply_to,
            ..
        } => Ok(Outgoing {
            id,
            to: to.clone(),
            template: None,
            content: Content::Text {
                body: body.clone(),
                preview_url: *preview_url,
            },
            reply_to: reply_to.clone(),
            manual: by_person,
        }),
        SendRequest::Template {
            to,
            template,
            reply_to,
            ..
        } => {
            let (header, values) = bind_template(hosted, template).await?;
            Ok(Outgoing {
                id,
                to: to.clone(),
                template: Some(header),
                content: Content::Template { values },
                reply_to: reply_to.clone(),
                manual: false,
            })
        }
        SendRequest::MarkRead { .. } => Err(GraphError::invalid_parameter(
            "A read receipt is not a message to send.",
        )),
    }
}

/// The business's approved template the send names, and the send's values bound to it.
/// A paused or disabled one is refused as the relay would refuse it.
async fn bind_template(
    hosted: &Hosted,
    send: &SendTemplate,
) -> Result<(TemplateHeader, BoundTemplate), GraphError> {
    let (name, language) = (send.name.as_str(), send.language.as_str());
    let named = || (name.to_owned(), language.to_owned());
    let template = match find_template(hosted, name, language).await? {
        Some(t) if t.status == TemplateStatus::Approved => t,
        Some(t) if t.status == TemplateStatus::Paused => {
            let (name, language) = named();
            let rule = RuleViolation::TemplatePaused { name, language };
            return Err(CloudError::from(&rule).into());
        }
        Some(t) if t.status == TemplateStatus::Disabled => {
            let (name, language) = named();
            let rule = RuleViolation::TemplateDisabled { name, language };
            return Err(CloudError::from(&rule).into());
        }
        // Not the relay's 132001, which names a version: none is chosen yet.
        _ => {
            return Err(CloudError::new(
                CloudErrorKind::TemplateUnavailable,
                format!("No template named {name} is approved in language {language}."),
            )
            .into());
        }
    };
    let definition = TemplateDefinition::from_parts(
        &template.name,
        &template.language,
        template.category,
        &template.parameter_format,
        &template.components,
    )
    .map_err(|e| {
        tracing::error!(id = %template.id, error = %e, "an approved template does not parse");
        GraphError::internal()
    })?;
    let values = bind(&definition, send).map_err(|e| GraphError::from(CloudError::from(&e)))?;
    let header = TemplateHeader {
        id: template.id,
        name: template.name,
        language: template.language,
        version: template.version,
        category: template.category,
    };
    Ok((header, values))
}

/// The business's live template of that exact name and language, whatever its status.
async fn find_template(
    hosted: &Hosted,
    name: &str,
    language: &str,
) -> Result<Option<TemplateInfo>, GraphError> {
    let query = TemplateQuery {
        name: Some(name.to_owned()),
        language: Some(language.to_owned()),
        limit: 1000,
        ..TemplateQuery::default()
    };
    match request(hosted, Op::TemplateList { query }).await? {
        Reply::Templates { templates, .. } => Ok(templates
            .into_iter()
            .find(|t| t.name == name && t.language == language)),
        other => Err(templates::unexpected(&other)),
    }
}

/// One request to the relay through the number's link, its refusals as the Graph errors a
/// send gets.
async fn request(hosted: &Hosted, op: Op) -> Result<Reply, GraphError> {
    templates::ask(&hosted.endpoint, op, |error| refused(&error)).await
}

/// The business's clock (a sandbox's test clock included), as the relay keeps it.
pub(crate) async fn business_now(hosted: &Hosted) -> Result<UnixTime, GraphError> {
    match request(hosted, Op::Clock).await? {
        Reply::Clock { now } => Ok(now),
        other => Err(templates::unexpected(&other)),
    }
}

/// What sending `message` now would do, decided and rated by the relay with nothing sent or
/// written: its price quote, or the refusal the send would get.
pub(crate) async fn preview(
    hosted: &Hosted,
    message: &Outgoing,
) -> Result<Option<ventana_core::pricing::PriceQuote>, GraphError> {
    let op = Op::Preview {
        to: message.to.clone(),
        kind: if message.template.is_some() {
            ventana_core::rules::EnvelopeKind::Template
        } else {
            ventana_core::rules::EnvelopeKind::Message
        },
        template: message.template.clone(),
        manual: message.manual,
    };
    match request(hosted, op).await? {
        Reply::Preview { quote } => Ok(quote),
        other => Err(templates::unexpected(&other)),
    }
}

/// Encrypts the message and hands it to the relay. `callback_data` (the send's
/// `biz_opaque_callback_data`) is kept first, so every status webhook can carry it.
pub(crate) async fn send(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    message: Outgoing,
    callback_data: Option<&str>,
) -> Result<Sent, GraphError> {
    if let Some(data) = callback_data {
        let owner = &hosted.record.address;
        let sealed = gateway
            .sealer
            .seal(&aad::callback_data(owner, &message.id), data.as_bytes());
        gateway
            .store
            .save_callback_data(owner, &message.id, sealed, UnixTime::now())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not keep a send's callback data");
                GraphError::unavailable("The platform is temporarily unavailable; retry later.")
            })?;
    }
    let app = GatewayEvents {
        gateway: Arc::downgrade(gateway),
    };
    let sent = hosted
        .endpoint
        .send(message, &app)
        .await
        .map_err(|e| match e {
            SendError::Refused(error) => refused(&error),
            SendError::UnknownRecipient(to) => refused(&ProtocolError::new(
                ErrorCode::UnknownAccount,
                format!("{to} has no Ventana account"),
            )),
            SendError::Client(e) => {
                tracing::warn!(error = %e, "send failed before reaching the relay");
                GraphError::unavailable("The platform is temporarily unavailable; retry later.")
            }
        })?;
    gateway.webhooks_due.notify_one();
    Ok(sent)
}

/// A relay refusal of a send (or of a request made for one) as the Graph error the business
/// gets: the same [`CloudError`] a `failed` status webhook would carry. One the business can
/// do nothing about is logged here, and answered opaquely.
pub(crate) fn refused(error: &ProtocolError) -> GraphError {
    let refusal = CloudError::of_send(error);
    if refusal.kind() == CloudErrorKind::SomethingWentWrong {
        tracing::error!(%error, "the relay refused unexpectedly");
    }
    refusal.into()
}
