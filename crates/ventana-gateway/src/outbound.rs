//! Sending for a business: a parsed send request resolved against the relay's template
//! registry into what the number's endpoint encrypts, now or when its schedule fires.
//!
//! A template send is checked here first, so the business hears 132001/132000/132012/
//! 132015/132016 at once with the details; the relay checks the template's clear header
//! again when it accepts the envelope (a template paused in between is refused there).

use crate::events::{GatewayEvents, cloud_error};
use crate::graph::error::GraphError;
use crate::graph::send::SendRequest;
use crate::{Gateway, Hosted, templates};
use std::sync::Arc;
use ventana_client::{Outgoing, SendError, Sent};
use ventana_core::payload::Content;
use ventana_core::protocol::{ErrorCode, Op, ProtocolError, Reply, TemplateInfo, TemplateQuery};
use ventana_core::template::{
    SendTemplate, TemplateDefinition, TemplateHeader, TemplateStatus, bind,
};
use ventana_core::{MessageId, PhoneNumber, UnixTime};

/// A message ready to encrypt: its recipient, content and, for a template, the version.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub(crate) to: PhoneNumber,
    pub(crate) template: Option<TemplateHeader>,
    pub(crate) content: Content,
    pub(crate) reply_to: Option<MessageId>,
}

impl Prepared {
    pub(crate) fn into_outgoing(self, id: MessageId) -> Outgoing {
        Outgoing {
            id,
            to: self.to,
            template: self.template,
            content: self.content,
            reply_to: self.reply_to,
        }
    }
}

/// Resolves a text or template send request (not a mark-as-read) for `hosted`.
pub(crate) async fn prepare(
    hosted: &Hosted,
    request: &SendRequest,
) -> Result<Prepared, GraphError> {
    match request {
        SendRequest::Text {
            to,
            body,
            preview_url,
            reply_to,
            ..
        } => Ok(Prepared {
            to: to.clone(),
            template: None,
            content: Content::Text {
                body: body.clone(),
                preview_url: *preview_url,
            },
            reply_to: reply_to.clone(),
        }),
        SendRequest::Template {
            to,
            template,
            reply_to,
            ..
        } => {
            let (header, values) = bind_template(hosted, template).await?;
            Ok(Prepared {
                to: to.clone(),
                template: Some(header),
                content: Content::Template { values },
                reply_to: reply_to.clone(),
            })
        }
        SendRequest::MarkRead { .. } => Err(GraphError::invalid_parameter(
            "A read receipt is not a message to send.",
        )),
    }
}

/// The business's approved template the send names, and the send's values bound to it.
async fn bind_template(
    hosted: &Hosted,
    send: &SendTemplate,
) -> Result<(TemplateHeader, ventana_core::template::BoundTemplate), GraphError> {
    let (name, language) = (send.name.as_str(), send.language.as_str());
    let template = match find_template(hosted, name, language).await? {
        Some(t) if t.status == TemplateStatus::Approved => t,
        Some(t) if t.status == TemplateStatus::Paused => {
            return Err(GraphError::template_parameter(
                132015,
                "Template is Paused",
                format!("Template {name} ({language}) is paused and cannot be sent now."),
            ));
        }
        Some(t) if t.status == TemplateStatus::Disabled => {
            return Err(GraphError::template_parameter(
                132016,
                "Template is Disabled",
                format!("Template {name} ({language}) is disabled and can no longer be sent."),
            ));
        }
        _ => {
            return Err(GraphError::no_template(format!(
                "No template named {name} is approved in language {language}."
            )));
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
    let values = bind(&definition, send).map_err(|e| {
        if e.code() == 132001 {
            GraphError::no_template(e.to_string())
        } else {
            GraphError::template_parameter(e.code(), e.title(), e.to_string())
        }
    })?;
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
    templates::ask(&hosted.endpoint, op, |error| refusal(&error)).await
}

/// The business's clock (a sandbox's test clock included), as the relay keeps it.
pub(crate) async fn business_now(hosted: &Hosted) -> Result<UnixTime, GraphError> {
    match request(hosted, Op::Clock).await? {
        Reply::Clock { now } => Ok(now),
        other => Err(templates::unexpected(&other)),
    }
}

/// Encrypts and hands the message to the relay under `id`.
pub(crate) async fn send(
    gateway: &Arc<Gateway>,
    hosted: &Hosted,
    id: MessageId,
    prepared: Prepared,
) -> Result<Sent, GraphError> {
    let app = GatewayEvents {
        gateway: Arc::downgrade(gateway),
    };
    let sent = hosted
        .endpoint
        .send(prepared.into_outgoing(id), &app)
        .await
        .map_err(|e| match e {
            SendError::Refused(error) => refusal(&error),
            SendError::UnknownRecipient(_) => {
                GraphError::undeliverable("The recipient is not on Ventana.")
            }
            SendError::Client(e) => {
                tracing::warn!(error = %e, "send failed before reaching the relay");
                GraphError::unavailable("The platform is temporarily unavailable; retry later.")
            }
        })?;
    gateway.webhooks_due.notify_one();
    Ok(sent)
}

/// A relay refusal as the Graph error the business gets.
pub(crate) fn refusal(error: &ProtocolError) -> GraphError {
    let (code, title, details) = cloud_error(error);
    match code {
        131047 => GraphError::outside_window(details),
        131026 => GraphError::undeliverable(details),
        132001 => GraphError::no_template(details),
        132015 | 132016 => GraphError::template_parameter(code as u32, title, details),
        _ if error.code == ErrorCode::BadRequest => {
            GraphError::invalid_parameter(error.message.clone())
        }
        _ => {
            tracing::error!(%error, "the relay refused unexpectedly");
            GraphError::internal()
        }
    }
}
