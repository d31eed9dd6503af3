//! Template messages on the user's device: the approved text fetched from the relay's
//! registry, checked against the message's header, rendered with the decrypted values, kept
//! for when the relay is gone; quick-reply taps going back to the business; and what the
//! `ventana user` commands show.
//!
//! The business here is a number registered straight at the relay with the operator token,
//! with its own endpoint: what a self-hosted gateway is, without the gateway's HTTP API.

use crate::harness::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use ventana::cli::screen::show;
use ventana_client::device::UserDevice;
use ventana_client::registration::{Proof, register};
use ventana_client::{Inbound, Outgoing, TapError, TemplateRenderError};
use ventana_core::payload::{Content, Header, Payload};
use ventana_core::protocol::{BusinessNumber, Op, Reply};
use ventana_core::rules::EnvelopeKind;
use ventana_core::template::bind::{BoundButton, BoundHeader, ButtonValue};
use ventana_core::template::render::{RenderedButtonKind, RenderedHeader};
use ventana_core::template::{BoundTemplate, Category, TemplateHeader};
use ventana_core::{MessageId, PhoneNumber};
use ventana_crypto::{SealKey, Sealer};
use ventana_store::sqlite::SqliteEndpointStore;

/// An appointment reminder: a text header and two body variables, a footer, and one button
/// of every kind.
fn appointment_reminder() -> Value {
    json!({
        "name": "appointment_reminder",
        "language": "en_US",
        "category": "UTILITY",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Appointment {{1}}",
             "example": {"header_text": ["V-17"]}},
            {"type": "BODY",
             "text": "Hi {{1}}, we look forward to seeing you on {{2}}. Tap a button below if you need to change it.",
             "example": {"body_text": [["Ana", "Friday at 10:30"]]}},
            {"type": "FOOTER", "text": "Clinic Ventana"},
            {"type": "BUTTONS", "buttons": [
                {"type": "QUICK_REPLY", "text": "Reschedule"},
                {"type": "QUICK_REPLY", "text": "Confirm"},
                {"type": "URL", "text": "Track", "url": "https://clinic.example/visits/{{1}}",
                 "example": ["https://clinic.example/visits/V-17"]},
                {"type": "PHONE_NUMBER", "text": "Call us", "phone_number": "+15550100"},
                {"type": "COPY_CODE", "example": "ABC123"}
            ]}
        ]
    })
}

/// The values a send of [`appointment_reminder`] carries, encrypted.
fn reminder_values(name: &str) -> BoundTemplate {
    BoundTemplate {
        header: Some(BoundHeader::Text("V-17".into())),
        body: vec![name.into(), "Friday at 10:30".into()],
        buttons: vec![
            BoundButton {
                index: 0,
                value: ButtonValue::Payload("RESCHEDULE-V-17".into()),
            },
            BoundButton {
                index: 2,
                value: ButtonValue::UrlSuffix("V-17".into()),
            },
            BoundButton {
                index: 4,
                value: ButtonValue::CouponCode("ABC123".into()),
            },
        ],
    }
}

/// A business number registered at the relay by the operator, with its own endpoint.
async fn business_device(node: &Node, dir: &Path, waba: &str, number: &str) -> Device {
    let number: PhoneNumber = number.parse().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let key = SealKey::generate().to_base64();
    std::fs::write(dir.join("device.key"), &key).unwrap();
    let store = SqliteEndpointStore::open(&dir.join("device.db")).unwrap();
    let sealer = Sealer::new(SealKey::from_base64(&key).unwrap());
    let business = BusinessNumber {
        waba_id: waba.parse().unwrap(),
        verified_name: format!("Clinic {waba}"),
        sandbox: false,
    };
    let proof = Proof::Operator {
        token: ADMIN_TOKEN.into(),
        business,
    };
    let http = reqwest::Client::new();
    register(&http, &node.url, &number, "Clinic", proof, &store, &sealer)
        .await
        .unwrap();
    drop(store);
    Device::connect(node, dir, &number).await
}

/// Submits `definition` through the business's own link; the template's id and version.
async fn submit(business: &Device, definition: Value) -> (String, u32) {
    let op = Op::TemplateCreate { definition };
    match business.endpoint.link().request(op, WAIT).await {
        Ok(Reply::Template { template }) => (template.id, template.version),
        other => panic!("template not created: {other:?}"),
    }
}

/// The operator approves a template through the relay's admin routes.
async fn approve(node: &Node, id: &str) {
    let path = format!("/relay/v1/admin/templates/{id}/approve");
    let (status, body) = node
        .admin(reqwest::Method::POST, &path, Some(json!({ "by": "test" })))
        .await;
    assert_eq!(status, 200, "approve {id}: {body}");
}

fn header_of(id: &str, version: u32) -> TemplateHeader {
    TemplateHeader {
        id: id.into(),
        name: "appointment_reminder".into(),
        language: "en_US".into(),
        version,
        category: Category::Utility,
    }
}

/// A node, a clinic whose reminder is approved, and Ana, who wrote to the clinic first (so
/// it may message her).
struct Scene {
    node: Node,
    clinic: Device,
    ana: Device,
    header: TemplateHeader,
}

async fn scene(tmp: &Path, database_url: Option<&str>) -> Scene {
    let node = Node::start_on(&tmp.join("node"), database_url).await;
    let mut clinic = business_device(&node, &tmp.join("clinic"), "3001", "15550003001").await;
    let ana = Device::register(&node, &tmp.join("ana"), "34600003001", "Ana").await;
    ana.send(&clinic.phone, "hello, I have an appointment")
        .await;
    clinic.next_message().await;
    let (id, version) = submit(&clinic, appointment_reminder()).await;
    approve(&node, &id).await;
    Scene {
        node,
        clinic,
        ana,
        header: header_of(&id, version),
    }
}

/// The clinic sends a message through its own endpoint; its id.
async fn clinic_sends(
    clinic: &Device,
    to: &PhoneNumber,
    template: Option<TemplateHeader>,
    content: Content,
) -> MessageId {
    let id = MessageId::generate();
    let message = Outgoing {
        id: id.clone(),
        to: to.clone(),
        template,
        content,
        reply_to: None,
        manual: false,
    };
    let sent = clinic
        .endpoint
        .send(message, &UserDevice::default())
        .await
        .unwrap();
    assert!(sent.accepted_at.is_some(), "the relay accepted {id}");
    id
}

/// The next inbound message, readable or not (receipts skipped).
async fn next_message_event(device: &mut Device) -> Inbound {
    loop {
        let event = tokio::time::timeout(WAIT, device.live.recv())
            .await
            .expect("a message in time")
            .unwrap();
        if !matches!(event, Inbound::Receipt { .. }) {
            return event;
        }
    }
}

/// Waits until the device's store caches the template version the header names.
async fn wait_cached(device: &Device, business: &PhoneNumber, header: &TemplateHeader) {
    tokio::time::timeout(WAIT, async {
        loop {
            let cached = device
                .endpoint
                .store()
                .cached_template(
                    device.endpoint.owner(),
                    business,
                    &header.id,
                    header.version,
                )
                .await
                .unwrap();
            if cached.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the version is prefetched into the store");
}

/// A template payload as if received from `from`, to render without sending it.
fn crafted(
    from: &PhoneNumber,
    to: &PhoneNumber,
    header: TemplateHeader,
    values: BoundTemplate,
) -> Payload {
    Payload {
        v: 1,
        header: Header {
            id: MessageId::generate(),
            from: from.clone(),
            to: to.clone(),
            kind: EnvelopeKind::Template,
            template: Some(header),
        },
        profile_name: None,
        content: Content::Template { values },
        reply_to: None,
    }
}

async fn a_received_template_renders_and_its_quick_reply_reaches_the_business(
    database_url: Option<&str>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let Scene {
        node,
        mut clinic,
        mut ana,
        header,
    } = scene(tmp.path(), database_url).await;
    let sent = clinic_sends(
        &clinic,
        &ana.phone,
        Some(header.clone()),
        Content::Template {
            values: reminder_values("Ana"),
        },
    )
    .await;

    let (meta, payload) = ana.next_message().await;
    assert_eq!(meta.id, sent);
    assert_eq!(meta.kind, EnvelopeKind::Template);
    assert_eq!(meta.template.as_ref(), Some(&header));
    let rendered = ana.endpoint.render_template(&payload).await.unwrap();
    assert_eq!(
        rendered.header,
        Some(RenderedHeader::Text("Appointment V-17".into()))
    );
    assert_eq!(
        rendered.body,
        "Hi Ana, we look forward to seeing you on Friday at 10:30. Tap a button below if you need to change it."
    );
    assert_eq!(rendered.footer.as_deref(), Some("Clinic Ventana"));
    let kinds: Vec<RenderedButtonKind> = rendered.buttons.iter().map(|b| b.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            RenderedButtonKind::QuickReply {
                payload: Some("RESCHEDULE-V-17".into())
            },
            RenderedButtonKind::QuickReply { payload: None },
            RenderedButtonKind::Url {
                url: "https://clinic.example/visits/V-17".into()
            },
            RenderedButtonKind::PhoneNumber {
                phone: "+15550100".into()
            },
            RenderedButtonKind::CopyCode {
                code: "ABC123".into()
            },
        ]
    );
    assert_eq!(
        show(&ana.endpoint, &payload).await,
        "Appointment V-17\n\n\
         Hi Ana, we look forward to seeing you on Friday at 10:30. Tap a button below if you need to change it.\n\n\
         Clinic Ventana\n\n\
         [1] Reschedule (quick reply)\n\
         [2] Confirm (quick reply)\n\
         [3] Track: https://clinic.example/visits/V-17\n\
         [4] Call us: +15550100\n\
         [5] Copy offer code: ABC123"
    );

    // A tap sends the label and the payload the business gave, as a reply to the template.
    let app = UserDevice::default();
    let tapped = ana
        .endpoint
        .tap_button(&clinic.phone, &sent, 0, &app)
        .await
        .unwrap();
    assert_eq!(
        (tapped.text.as_str(), tapped.payload.as_str()),
        ("Reschedule", "RESCHEDULE-V-17")
    );
    let (tap_meta, tap) = clinic.next_message().await;
    assert_eq!(tap_meta.id, tapped.sent.id);
    assert_eq!(tap_meta.kind, EnvelopeKind::Message);
    assert_eq!(
        tap.content,
        Content::Button {
            text: "Reschedule".into(),
            payload: "RESCHEDULE-V-17".into()
        }
    );
    assert_eq!(tap.reply_to.as_ref(), Some(&sent));

    // A quick reply the business gave no payload sends its label as the payload.
    let tapped = ana
        .endpoint
        .tap_button(&clinic.phone, &sent, 1, &app)
        .await
        .unwrap();
    let (_, tap) = clinic.next_message().await;
    assert_eq!(
        tap.content,
        Content::Button {
            text: "Confirm".into(),
            payload: "Confirm".into()
        }
    );
    assert_eq!(tapped.payload, "Confirm");

    // Only a quick reply of a template received from that business can be tapped.
    let not_quick = ana.endpoint.tap_button(&clinic.phone, &sent, 2, &app).await;
    assert!(
        matches!(not_quick, Err(TapError::NotQuickReply(2))),
        "{not_quick:?}"
    );
    let missing = ana.endpoint.tap_button(&clinic.phone, &sent, 9, &app).await;
    assert!(
        matches!(missing, Err(TapError::NoSuchButton(9))),
        "{missing:?}"
    );
    let elsewhere = ana
        .endpoint
        .tap_button(&"15550009999".parse().unwrap(), &sent, 0, &app)
        .await;
    assert!(
        matches!(elsewhere, Err(TapError::NoSuchMessage(_))),
        "{elsewhere:?}"
    );
    let own = ana
        .endpoint
        .tap_button(&clinic.phone, &tapped.sent.id, 0, &app)
        .await;
    assert!(matches!(own, Err(TapError::NoSuchMessage(_))), "{own:?}");
    clinic.expect_silence(Duration::from_millis(300)).await;

    ana.disconnect().await;
    clinic.disconnect().await;
    node.stop().await;
}

#[tokio::test]
async fn a_received_template_renders_and_a_quick_reply_tap_reaches_the_business() {
    a_received_template_renders_and_its_quick_reply_reaches_the_business(None).await;
}

#[tokio::test]
async fn a_received_template_renders_and_a_quick_reply_tap_reaches_the_business_on_postgresql() {
    let Some(db) = Database::create().await else {
        return;
    };
    a_received_template_renders_and_its_quick_reply_reaches_the_business(Some(&db.url)).await;
}

#[tokio::test]
async fn a_received_template_renders_from_the_cache_once_the_relay_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let Scene {
        node,
        clinic,
        mut ana,
        header,
    } = scene(tmp.path(), None).await;
    let sent = clinic_sends(
        &clinic,
        &ana.phone,
        Some(header.clone()),
        Content::Template {
            values: reminder_values("Ana"),
        },
    )
    .await;
    ana.next_message().await;
    // Fetched on receipt, without anyone rendering it yet.
    wait_cached(&ana, &clinic.phone, &header).await;

    let url = node.url.clone();
    let phone = ana.phone.clone();
    ana.disconnect().await;
    clinic.disconnect().await;
    node.stop().await;

    // A fresh endpoint (nothing in memory) with no relay to ask.
    let gone = Node::attach(&url);
    let ana = Device::connect(&gone, &tmp.path().join("ana"), &phone).await;
    let record = ana
        .endpoint
        .store()
        .message(&phone, &sent)
        .await
        .unwrap()
        .unwrap();
    let payload = ana.endpoint.open_body(&record).unwrap();
    let rendered = ana.endpoint.render_template(&payload).await.unwrap();
    assert!(rendered.body.starts_with("Hi Ana, we look forward"));
    assert!(
        show(&ana.endpoint, &payload)
            .await
            .contains("[1] Reschedule (quick reply)")
    );

    // A version never fetched cannot be rendered now, but may be later.
    let later = crafted(
        &payload.header.from,
        &phone,
        header_of(&header.id, header.version + 1),
        reminder_values("Ana"),
    );
    let error = ana.endpoint.render_template(&later).await.unwrap_err();
    assert!(
        matches!(error, TemplateRenderError::Unavailable(_)),
        "{error:?}"
    );
    assert!(error.is_transient());
    let shown = show(&ana.endpoint, &later).await;
    assert!(shown.contains("cannot be shown yet"), "{shown}");
    ana.disconnect().await;
}

#[tokio::test]
async fn a_template_message_whose_kind_header_and_content_disagree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let Scene {
        node,
        clinic,
        mut ana,
        header,
    } = scene(tmp.path(), None).await;

    // A template envelope (checked by the relay) carrying a free-form text inside.
    let text = Content::Text {
        body: "text the relay never checked".into(),
        preview_url: false,
    };
    let smuggled = clinic_sends(&clinic, &ana.phone, Some(header.clone()), text).await;
    // Template values inside an envelope that is not a template message.
    let values = Content::Template {
        values: reminder_values("Ana"),
    };
    let unchecked = clinic_sends(&clinic, &ana.phone, None, values).await;
    for expected in [&smuggled, &unchecked] {
        match next_message_event(&mut ana).await {
            Inbound::Undecryptable { meta, reason, .. } => {
                assert_eq!(&meta.id, expected);
                assert!(reason.contains("template"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // The session moved on with them: the next message reads.
    let fine = clinic_sends(
        &clinic,
        &ana.phone,
        Some(header),
        Content::Template {
            values: reminder_values("Ana"),
        },
    )
    .await;
    let (meta, _) = ana.next_message().await;
    assert_eq!(meta.id, fine);
    let history: Vec<MessageId> = ana.history().await.into_iter().map(|r| r.id).collect();
    assert!(!history.contains(&smuggled) && !history.contains(&unchecked));
    assert!(history.contains(&fine));

    ana.disconnect().await;
    clinic.disconnect().await;
    node.stop().await;
}

#[tokio::test]
async fn an_unapproved_or_misnamed_version_and_values_that_do_not_fit_do_not_render() {
    let tmp = tempfile::tempdir().unwrap();
    let Scene {
        node,
        clinic,
        ana,
        header,
    } = scene(tmp.path(), None).await;
    let render = |header: TemplateHeader, values: BoundTemplate| {
        let payload = crafted(&clinic.phone, &ana.phone, header, values);
        let endpoint = std::sync::Arc::clone(&ana.endpoint);
        async move { endpoint.render_template(&payload).await }
    };

    // Submitted but not approved: the relay does not hand it out.
    let mut pending = appointment_reminder();
    pending["name"] = json!("appointment_pending");
    let (pending_id, _) = submit(&clinic, pending).await;
    let unapproved = TemplateHeader {
        name: "appointment_pending".into(),
        ..header_of(&pending_id, 1)
    };
    let error = render(unapproved.clone(), reminder_values("Ana"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TemplateRenderError::UnknownVersion { version: 1, .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_transient());
    // Nor does a user lend a business's template.
    let borrowed = crafted(
        &ana.phone,
        &ana.phone,
        header.clone(),
        reminder_values("Ana"),
    );
    let error = ana.endpoint.render_template(&borrowed).await.unwrap_err();
    assert!(
        matches!(error, TemplateRenderError::UnknownVersion { .. }),
        "{error:?}"
    );

    // The approved version renders (and is then kept); a header naming it under another
    // name, language or category does not.
    render(header.clone(), reminder_values("Ana"))
        .await
        .unwrap();
    for (field, misnamed) in [
        (
            "name",
            TemplateHeader {
                name: "appointment_other".into(),
                ..header.clone()
            },
        ),
        (
            "language",
            TemplateHeader {
                language: "pt_BR".into(),
                ..header.clone()
            },
        ),
        (
            "category",
            TemplateHeader {
                category: Category::Marketing,
                ..header.clone()
            },
        ),
    ] {
        let error = render(misnamed, reminder_values("Ana")).await.unwrap_err();
        assert!(
            matches!(error, TemplateRenderError::Mismatch(f) if f == field),
            "{error:?}"
        );
    }

    // Values that do not fit the approved text.
    let mut short = reminder_values("Ana");
    short.body.pop();
    let error = render(header.clone(), short).await.unwrap_err();
    assert!(matches!(error, TemplateRenderError::Values(_)), "{error:?}");
    let shown = show(
        &ana.endpoint,
        &crafted(
            &clinic.phone,
            &ana.phone,
            unapproved,
            reminder_values("Ana"),
        ),
    )
    .await;
    assert!(
        shown.starts_with("(template appointment_pending (en_US, version 1) cannot be shown: "),
        "{shown}"
    );

    ana.disconnect().await;
    clinic.disconnect().await;
    node.stop().await;
}

/// Runs `ventana user …` for the device in `dir` against `url`; (stdout, success).
async fn ventana_user(dir: &Path, url: &str, args: &[&str]) -> (String, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ventana"));
    command
        .arg("user")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("VENTANA_URL", url)
        .env("VENTANA_DATA_DIR", dir.join("unused-node-data"))
        .env_remove("VENTANA_ADMIN_TOKEN");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        eprintln!("stderr: {}", String::from_utf8_lossy(&output.stderr));
    }
    (stdout, output.status.success())
}

#[tokio::test]
async fn the_user_commands_show_a_rendered_template_and_tap_its_quick_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let Scene {
        node,
        mut clinic,
        mut ana,
        header,
    } = scene(tmp.path(), None).await;
    let sent = clinic_sends(
        &clinic,
        &ana.phone,
        Some(header),
        Content::Template {
            values: reminder_values("Ana"),
        },
    )
    .await;
    ana.next_message().await;
    // Hand the device over to the command line.
    let dir = tmp.path().join("ana");
    std::fs::write(dir.join("phone"), ana.phone.digits()).unwrap();
    ana.disconnect().await;

    let (out, ok) = ventana_user(&dir, &node.url, &["inbox", "--json"]).await;
    assert!(ok, "{out}");
    let inbox: Value = serde_json::from_str(&out).unwrap();
    let shown = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == sent.as_str())
        .unwrap()
        .clone();
    assert_eq!(shown["kind"], "template");
    let template = &shown["template"];
    assert_eq!(template["name"], "appointment_reminder");
    assert_eq!(
        template["rendered"]["header"],
        json!({"type": "text", "text": "Appointment V-17"})
    );
    assert_eq!(
        template["rendered"]["body"],
        "Hi Ana, we look forward to seeing you on Friday at 10:30. Tap a button below if you need to change it."
    );
    assert_eq!(
        template["rendered"]["buttons"][0],
        json!({"number": 1, "type": "quick_reply", "text": "Reschedule", "payload": "RESCHEDULE-V-17"})
    );
    assert_eq!(
        template["rendered"]["buttons"][2],
        json!({"number": 3, "type": "url", "text": "Track", "url": "https://clinic.example/visits/V-17"})
    );
    assert!(
        shown["text"]
            .as_str()
            .unwrap()
            .contains("[2] Confirm (quick reply)")
    );

    let (out, ok) = ventana_user(&dir, &node.url, &["inbox"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{sent}  ← {}  Appointment V-17  [received]",
            clinic.phone
        )),
        "{out}"
    );
    assert!(out.contains("    [1] Reschedule (quick reply)"), "{out}");

    let (out, ok) = ventana_user(
        &dir,
        &node.url,
        &["tap", "--message", sent.as_str(), "--button", "1", "--json"],
    )
    .await;
    assert!(ok, "{out}");
    let tapped: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tapped["text"], "Reschedule");
    assert_eq!(tapped["payload"], "RESCHEDULE-V-17");
    assert_eq!(tapped["reply_to"], sent.as_str());
    assert_eq!(tapped["queued"], false);
    let (meta, tap) = clinic.next_message().await;
    assert_eq!(meta.id.as_str(), tapped["id"].as_str().unwrap());
    assert_eq!(tap.reply_to.as_ref(), Some(&sent));

    let (_, ok) = ventana_user(
        &dir,
        &node.url,
        &["tap", "--message", sent.as_str(), "--button", "4"],
    )
    .await;
    assert!(!ok, "a phone-number button cannot be tapped as a reply");

    clinic.disconnect().await;
    node.stop().await;
}

/// `ventana chat` as a child process: its output lines as they come, and its input.
struct Chat {
    child: std::process::Child,
    input: std::process::ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Chat {
    fn start(dir: &Path, url: &str, with: &PhoneNumber) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ventana"))
            .arg("chat")
            .arg("--dir")
            .arg(dir)
            .arg("--with")
            .arg(with.digits())
            .env("VENTANA_URL", url)
            .env("VENTANA_DATA_DIR", dir.join("unused-node-data"))
            .env_remove("VENTANA_ADMIN_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(output).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Chat {
            child,
            input,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`.
    async fn expect(&mut self, text: &str) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                let found = line.contains(text);
                self.seen.push(line);
                if found {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            found == Ok(true),
            "no line with {text:?} in:\n{}",
            self.seen.join("\n")
        );
    }

    fn say(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.input, "{line}").unwrap();
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_chat_shows_templates_in_history_and_live_and_taps_with_a_command() {
    let tmp = tempfile::tempdir().unwrap();
    let Scene {
        node,
        mut clinic,
        mut ana,
        header,
    } = scene(tmp.path(), None).await;
    let values = |name: &str| Content::Template {
        values: reminder_values(name),
    };
    clinic_sends(&clinic, &ana.phone, Some(header.clone()), values("Ana")).await;
    ana.next_message().await;
    let dir = tmp.path().join("ana");
    let phone = ana.phone.clone();
    std::fs::write(dir.join("phone"), phone.digits()).unwrap();
    ana.disconnect().await;

    let mut chat = Chat::start(&dir, &node.url, &clinic.phone);
    chat.expect("  them: Appointment V-17").await;
    chat.expect("        Hi Ana, we look forward").await;
    chat.expect("        [1] Reschedule (quick reply)").await;
    chat.expect("        [5] Copy offer code: ABC123").await;

    // A second reminder arrives while chatting; /tap answers the latest.
    let live = clinic_sends(&clinic, &phone, Some(header), values("Ana B")).await;
    chat.expect("        Hi Ana B, we look forward").await;
    chat.say("/tap 2");
    chat.expect("(tapped \"Confirm\")").await;
    let (_, tap) = clinic.next_message().await;
    assert_eq!(
        tap.content,
        Content::Button {
            text: "Confirm".into(),
            payload: "Confirm".into()
        }
    );
    assert_eq!(tap.reply_to, Some(live));
    chat.say("/tap 3");
    chat.expect("! button 3 is not a quick reply").await;
    chat.say("/quit");
    drop(chat);

    clinic.disconnect().await;
    node.stop().await;
}
