//! Template envelopes: checked against the registry before the store's rules apply.

use super::*;

on_both_backends!(template_envelopes_are_checked_against_the_registry,);

async fn template_envelopes_are_checked_against_the_registry(backend: Backend) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3013", "15550003013", true).await;
    let rival = lab.business("3014", "15550003014", false).await;
    let mut ana = lab.user("34600003013").await;

    // Ana writes first, then her window closes on the sandbox clock.
    let hello = MessageId::generate();
    assert!(matches!(
        ana.send(&hello, &shop, EnvelopeKind::Message, None).await,
        Ok(Reply::Sent { .. })
    ));
    let (status, _) = lab.node.advance_clock("3013", 25 * 3600).await;
    assert_eq!(status, 200);
    let late = shop
        .send(&MessageId::generate(), &ana, EnvelopeKind::Message, None)
        .await
        .unwrap_err();
    assert!(
        matches!(late.rule, Some(RuleViolation::WindowClosed { .. })),
        "{late}"
    );

    let created = shop.create(shipped("order_shipped")).await;
    let header = header_of(&created);
    let unavailable = Some(RuleViolation::TemplateUnavailable {
        name: "order_shipped".into(),
        language: "en_US".into(),
    });
    let pending = shop
        .send(
            &MessageId::generate(),
            &ana,
            EnvelopeKind::Template,
            Some(header.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (pending.code, pending.rule),
        (ErrorCode::Refused, unavailable.clone())
    );

    // Approved: it goes out past the closed window, with its header to the device.
    lab.approve(&created.id).await;
    let sent_id = MessageId::generate();
    let first = shop
        .send(&sent_id, &ana, EnvelopeKind::Template, Some(header.clone()))
        .await
        .unwrap();
    let envelope = ana.next_envelope().await;
    assert_eq!(envelope.id, sent_id);
    assert_eq!(envelope.kind, EnvelopeKind::Template);
    assert_eq!(envelope.template.as_ref(), Some(&header));

    // A header that does not match the registry is refused.
    for wrong in [
        TemplateHeader {
            version: 2,
            ..header.clone()
        },
        TemplateHeader {
            category: Category::Marketing,
            ..header.clone()
        },
        TemplateHeader {
            language: "es".into(),
            ..header.clone()
        },
        TemplateHeader {
            id: "1234567890123456".into(),
            ..header.clone()
        },
    ] {
        let refused = shop
            .send(
                &MessageId::generate(),
                &ana,
                EnvelopeKind::Template,
                Some(wrong.clone()),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Refused, "{wrong:?}");
        assert!(
            matches!(
                refused.rule,
                Some(RuleViolation::TemplateUnavailable { .. })
            ),
            "{wrong:?}: {refused}"
        );
    }
    // Another business cannot send this business's template.
    let theirs = rival
        .send(
            &MessageId::generate(),
            &ana,
            EnvelopeKind::Template,
            Some(header.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(theirs.rule, unavailable);

    // Paused: a new message is refused, but a retry of the accepted one is answered as the
    // first time.
    let (status, _) = lab
        .review(&created.id, "pause", json!({ "reason": "spam" }))
        .await;
    assert_eq!(status, 200);
    let paused = shop
        .send(
            &MessageId::generate(),
            &ana,
            EnvelopeKind::Template,
            Some(header.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(
        paused.rule,
        Some(RuleViolation::TemplatePaused {
            name: "order_shipped".into(),
            language: "en_US".into(),
        })
    );
    let retry = shop
        .send(&sent_id, &ana, EnvelopeKind::Template, Some(header.clone()))
        .await
        .unwrap();
    assert_eq!(retry, first);
    lab.approve(&created.id).await;
    let (status, _) = lab.review(&created.id, "disable", json!({})).await;
    assert_eq!(status, 200);
    let disabled = shop
        .send(
            &MessageId::generate(),
            &ana,
            EnvelopeKind::Template,
            Some(header.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(disabled.rule, Some(RuleViolation::TemplateDisabled { .. })),
        "{disabled}"
    );

    // Headers only on templates, templates only from businesses.
    let bare = shop
        .send(&MessageId::generate(), &ana, EnvelopeKind::Template, None)
        .await
        .unwrap_err();
    assert_eq!(bare.code, ErrorCode::BadRequest);
    let stray = shop
        .send(
            &MessageId::generate(),
            &ana,
            EnvelopeKind::Message,
            Some(header.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(stray.code, ErrorCode::BadRequest);
    let from_user = ana
        .send(
            &MessageId::generate(),
            &shop,
            EnvelopeKind::Template,
            Some(header),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (from_user.code, from_user.message.as_str()),
        (ErrorCode::BadRequest, "users do not send templates")
    );
    lab.stop().await;
}
