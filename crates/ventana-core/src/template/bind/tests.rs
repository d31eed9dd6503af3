use super::*;
use crate::template::fixtures;
use serde_json::{Value, json};

fn send(json: Value) -> SendTemplate {
    SendTemplate::parse(&json).unwrap()
}

fn shipping_send() -> Value {
    json!({
        "name": "shipping_confirmation", "language": {"code": "en_US"},
        "components": [
            {"type": "header", "parameters": [{"type": "text", "text": "#4821"}]},
            {"type": "body", "parameters": [
                {"type": "text", "text": "Ana"},
                {"type": "currency", "currency": {"fallback_value": "$100.99", "code": "USD", "amount_1000": 100990}},
                {"type": "date_time", "date_time": {"fallback_value": "February 25, 1977"}},
            ]},
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "4821"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "1",
             "parameters": [{"type": "payload", "payload": "TALK-4821"}]},
        ],
    })
}

fn shipping_error(edit: impl FnOnce(&mut Value)) -> BindError {
    let mut json = shipping_send();
    edit(&mut json);
    bind(&fixtures::shipping(), &send(json)).unwrap_err()
}

fn format_error(field: &str, reason: &str) -> BindError {
    mismatch(field, reason)
}

#[test]
fn a_shipping_send_binds_to_compact_values_in_template_order() {
    let bound = bind(&fixtures::shipping(), &send(shipping_send())).unwrap();
    assert_eq!(
        bound,
        BoundTemplate {
            header: Some(BoundHeader::Text("#4821".into())),
            body: vec!["Ana".into(), "$100.99".into(), "February 25, 1977".into()],
            buttons: vec![
                BoundButton {
                    index: 0,
                    value: ButtonValue::UrlSuffix("4821".into())
                },
                BoundButton {
                    index: 1,
                    value: ButtonValue::Payload("TALK-4821".into())
                },
            ],
        }
    );
    let wire = serde_json::to_string(&bound).unwrap();
    assert_eq!(
        wire,
        r##"{"header":{"text":"#4821"},"body":["Ana","$100.99","February 25, 1977"],"buttons":[{"index":0,"url_suffix":"4821"},{"index":1,"payload":"TALK-4821"}]}"##
    );
    assert_eq!(serde_json::from_str::<BoundTemplate>(&wire).unwrap(), bound);
}

#[test]
fn a_quick_reply_payload_is_optional() {
    let mut json = shipping_send();
    json["components"].as_array_mut().unwrap().pop();
    let bound = bind(&fixtures::shipping(), &send(json)).unwrap();
    assert_eq!(bound.buttons.len(), 1);
    assert_eq!(bound.buttons[0].index, 0);
}

#[test]
fn named_parameters_may_come_in_any_order() {
    let bound = bind(
        &fixtures::appointment(),
        &send(json!({
            "name": "appointment_reminder", "language": {"code": "en"},
            "components": [
                {"type": "HEADER", "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Ana"}]},
                {"type": "BODY", "parameters": [
                    {"type": "text", "parameter_name": "time", "text": "10:30"},
                    {"type": "text", "parameter_name": "first_name", "text": "Ana"},
                    {"type": "date_time", "parameter_name": "date", "date_time": {"fallback_value": "May 3"}},
                    {"type": "text", "parameter_name": "doctor", "text": "Dr. Ruiz"},
                ]},
            ],
        })),
    )
    .unwrap();
    assert_eq!(bound.header, Some(BoundHeader::Text("Ana".into())));
    assert_eq!(bound.body, ["Ana", "Dr. Ruiz", "May 3", "10:30"]);
    assert!(bound.buttons.is_empty());
}

fn ticket_send() -> Value {
    json!({
        "name": "event_ticket", "language": {"code": "pt_BR"},
        "components": [
            {"type": "header", "parameters": [{"type": "document",
                "document": {"link": "https://tickets.example/7.pdf", "filename": "ticket.pdf"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "Jazz Night"}, {"type": "text", "text": "June 5"}]},
            {"type": "button", "sub_type": "copy_code", "index": 1,
             "parameters": [{"type": "coupon_code", "coupon_code": "GATE7A"}]},
        ],
    })
}

fn ticket_error(edit: impl FnOnce(&mut Value)) -> BindError {
    let mut json = ticket_send();
    edit(&mut json);
    bind(&fixtures::ticket(), &send(json)).unwrap_err()
}

#[test]
fn a_ticket_binds_its_document_and_coupon_code() {
    let bound = bind(&fixtures::ticket(), &send(ticket_send())).unwrap();
    assert_eq!(
        bound.header,
        Some(BoundHeader::Media(BoundMedia {
            kind: MediaKind::Document,
            source: MediaSource::Link("https://tickets.example/7.pdf".into()),
            filename: Some("ticket.pdf".into()),
        }))
    );
    assert_eq!(
        serde_json::to_value(&bound.header).unwrap(),
        json!({"media": {"kind": "document", "link": "https://tickets.example/7.pdf", "filename": "ticket.pdf"}})
    );
    assert_eq!(
        bound.buttons,
        [BoundButton {
            index: 1,
            value: ButtonValue::CouponCode("GATE7A".into())
        }]
    );
}

#[test]
fn wrong_counts_are_132000() {
    let cases = [
        (
            shipping_error(|j| {
                j["components"][1]["parameters"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            count("body", 3, 2),
        ),
        (
            shipping_error(|j| {
                j["components"].as_array_mut().unwrap().remove(0);
            }),
            count("header", 1, 0),
        ),
        (
            shipping_error(|j| {
                j["components"][0]["parameters"] = json!([]);
            }),
            count("header", 1, 0),
        ),
        (
            shipping_error(|j| {
                j["components"].as_array_mut().unwrap().remove(2);
            }),
            count("button 0", 1, 0),
        ),
        (
            ticket_error(|j| {
                j["components"].as_array_mut().unwrap().remove(2);
            }),
            count("button 1", 1, 0),
        ),
        (
            shipping_error(|j| {
                j["components"][3]["parameters"] = json!([{"type": "payload", "payload": "a"}, {"type": "payload", "payload": "b"}]);
            }),
            count("button 1", 1, 2),
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error, expected);
        assert_eq!(error.code(), 132000);
        assert_eq!(
            error.title(),
            "Number of parameters does not match the expected number of params"
        );
    }
    assert_eq!(
        count("body", 3, 2).to_string(),
        "body: expected 3 parameters, got 2"
    );

    let hello = fixtures::parse(json!({
        "name": "hello", "language": "en", "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Hello there, welcome aboard."}],
    }));
    let given = |components: Value| {
        send(json!({"name": "hello", "language": {"code": "en"}, "components": components}))
    };
    assert_eq!(
        bind(&hello, &given(json!([]))),
        Ok(BoundTemplate::default())
    );
    assert_eq!(
        bind(
            &hello,
            &given(json!([{"type": "header", "parameters": [{"type": "text", "text": "x"}]}]))
        ),
        Err(count("header", 0, 1))
    );
    assert_eq!(
        bind(
            &hello,
            &given(json!([{"type": "body", "parameters": [{"type": "text", "text": "x"}]}]))
        ),
        Err(count("body", 0, 1))
    );
}

#[test]
fn parameters_that_do_not_fit_are_132012() {
    let body = "components[1].parameters[0]";
    let cases = [
        (
            shipping_error(|j| j["components"][1]["parameters"][0]["text"] = json!("")),
            format_error(body, "the value must not be empty"),
        ),
        (
            shipping_error(|j| j["components"][1]["parameters"][0]["text"] = json!("Ana\nBob")),
            format_error(body, "the value cannot contain new lines or tabs"),
        ),
        (
            shipping_error(|j| j["components"][1]["parameters"][0]["text"] = json!("Ana\tBob")),
            format_error(body, "the value cannot contain new lines or tabs"),
        ),
        (
            shipping_error(|j| j["components"][1]["parameters"][0]["text"] = json!("Ana     Bob")),
            format_error(
                body,
                "the value cannot contain more than 4 consecutive spaces",
            ),
        ),
        (
            shipping_error(|j| {
                j["components"][1]["parameters"][1]["currency"]["amount_1000"] = json!(100.5)
            }),
            format_error(
                "components[1].parameters[1].currency.amount_1000",
                "must be an integer",
            ),
        ),
        (
            shipping_error(|j| {
                j["components"][1]["parameters"][1]["currency"]["code"] = json!("usd")
            }),
            format_error(
                "components[1].parameters[1].currency.code",
                "must be an ISO 4217 code of 3 uppercase letters",
            ),
        ),
        (
            shipping_error(|j| {
                j["components"][1]["parameters"][0] = json!({"type": "image", "image": {"id": "1"}})
            }),
            format_error(
                body,
                "expected a text, currency or date_time parameter, got image",
            ),
        ),
        (
            shipping_error(|j| {
                j["components"][1]["parameters"][0]["parameter_name"] = json!("first_name")
            }),
            format_error(
                body,
                "a POSITIONAL template takes its parameters in order, without parameter_name",
            ),
        ),
        (
            shipping_error(|j| {
                j["components"][2]["index"] = json!(1);
                j["components"].as_array_mut().unwrap().pop();
            }),
            format_error(
                "components[2].index",
                "the template has no url button at index 1",
            ),
        ),
        (
            shipping_error(|j| j["components"][2]["index"] = json!(7)),
            format_error(
                "components[2].index",
                "the template has no url button at index 7",
            ),
        ),
        (
            shipping_error(|j| j["components"][2]["parameters"][0]["text"] = json!("48 21")),
            format_error(
                "components[2].parameters[0].text",
                "a url suffix cannot contain whitespace",
            ),
        ),
        (
            shipping_error(|j| {
                j["components"][3]["parameters"][0] = json!({"type": "text", "text": "x"})
            }),
            format_error(
                "components[3].parameters[0]",
                "expected a payload parameter, got text",
            ),
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error, expected);
        assert_eq!(error.code(), 132012);
    }
}

#[test]
fn media_headers_need_their_kind_and_exactly_one_of_id_and_link() {
    let header = "components[0].parameters[0]";
    let document =
        |media: Value| ticket_error(|j| j["components"][0]["parameters"][0]["document"] = media);
    let cases = [
        (
            ticket_error(|j| {
                j["components"][0]["parameters"][0] = json!({"type": "text", "text": "ticket"})
            }),
            format_error(
                header,
                "the header is DOCUMENT: the parameter's type must be document, not text",
            ),
        ),
        (
            ticket_error(|j| {
                j["components"][0]["parameters"][0] = json!({"type": "image", "image": {"id": "1"}})
            }),
            format_error(
                header,
                "the header is DOCUMENT: the parameter's type must be document, not image",
            ),
        ),
        (
            document(json!({})),
            format_error(
                "components[0].parameters[0].document",
                "needs exactly one of id and link",
            ),
        ),
        (
            document(json!({"id": "1", "link": "https://t.example/a.pdf"})),
            format_error(
                "components[0].parameters[0].document",
                "needs exactly one of id and link",
            ),
        ),
        (
            document(json!({"link": "ftp://t.example/a.pdf"})),
            format_error(
                "components[0].parameters[0].document.link",
                "must be an https:// or http:// link",
            ),
        ),
        (
            ticket_error(|j| {
                j["components"][2]["parameters"][0]["coupon_code"] = json!("THIS-CODE-IS-LONG")
            }),
            format_error(
                "components[2].parameters[0].coupon_code",
                "a coupon code is at most 15 characters",
            ),
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error, expected);
        assert_eq!(error.code(), 132012);
    }

    let mut by_id = ticket_send();
    by_id["components"][0]["parameters"][0] = json!({"type": "document", "document": {"id": "1"}});
    assert_eq!(
        bind(&fixtures::ticket(), &send(by_id)).unwrap().header,
        Some(BoundHeader::Media(BoundMedia {
            kind: MediaKind::Document,
            source: MediaSource::Id("1".into()),
            filename: None,
        }))
    );
}

#[test]
fn named_parameters_must_name_a_variable_of_the_template() {
    let appointment = fixtures::appointment();
    let with_body = |parameters: Value| {
        bind(&appointment, &send(json!({
            "name": "appointment_reminder", "language": {"code": "en"},
            "components": [
                {"type": "header", "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Ana"}]},
                {"type": "body", "parameters": parameters},
            ],
        })))
        .unwrap_err()
    };
    let p = |name: &str| json!({"type": "text", "parameter_name": name, "text": "x"});
    assert_eq!(
        with_body(json!([p("first_name"), p("doctor"), p("date"), p("hour")])),
        format_error(
            "components[1].parameters[3]",
            "the template has no parameter named \"hour\""
        )
    );
    assert_eq!(
        with_body(json!([p("first_name"), p("doctor"), p("date"), p("date")])),
        format_error("components[1].parameters[3]", "\"date\" is given twice")
    );
    assert_eq!(
        with_body(json!([p("first_name"), p("doctor"), p("date"), {"type": "text", "text": "x"}])),
        format_error(
            "components[1].parameters[3]",
            "a NAMED template needs parameter_name on each parameter"
        )
    );
}

#[test]
fn a_location_header_takes_coordinates_in_range() {
    let venue = fixtures::parse(json!({
        "name": "venue", "language": "en", "category": "UTILITY",
        "components": [{"type": "HEADER", "format": "LOCATION"},
                       {"type": "BODY", "text": "Here is where we meet tomorrow morning."}],
    }));
    let at = |latitude: Value| {
        bind(
            &venue,
            &send(json!({
                "name": "venue", "language": {"code": "en"},
                "components": [{"type": "header", "parameters": [{"type": "location",
                    "location": {"latitude": latitude, "longitude": -9.14, "name": "Hall", "address": "1 Main St"}}]}],
            })),
        )
    };
    assert_eq!(
        at(json!("38.72")).unwrap().header,
        Some(BoundHeader::Location(Location {
            latitude: "38.72".into(),
            longitude: "-9.14".into(),
            name: Some("Hall".into()),
            address: Some("1 Main St".into()),
        }))
    );
    assert_eq!(
        at(json!(91)),
        Err(format_error(
            "components[0].parameters[0].location.latitude",
            "must be a number from -90 to 90"
        ))
    );
}

#[test]
fn a_send_for_another_template_is_132001() {
    let mut json = shipping_send();
    json["language"]["code"] = json!("pt_BR");
    let error = bind(&fixtures::shipping(), &send(json)).unwrap_err();
    assert_eq!(error.code(), 132001);
    assert_eq!(
        error.to_string(),
        "the send is for shipping_confirmation (pt_BR), not this template"
    );
}
