//! Message templates through the real path: the Cloud API's template endpoints on a node's
//! gateway, answered by its relay over the WebSocket, reviewed by the operator, and their
//! status changes arriving as signed `message_template_status_update` webhooks. Each
//! scenario runs on SQLite and, when `VENTANA_TEST_POSTGRES` names a server, on PostgreSQL.

use crate::harness::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;

#[tokio::test]
async fn templates_are_created_listed_paged_and_read_as_the_cloud_api_does() {
    on_sqlite(create_list_and_read).await;
}

#[tokio::test]
async fn templates_are_created_listed_paged_and_read_on_postgresql_too() {
    on_postgresql(create_list_and_read).await;
}

#[tokio::test]
async fn reviews_and_edits_reach_the_business_as_status_webhooks() {
    on_sqlite(reviews_and_edits).await;
}

#[tokio::test]
async fn reviews_and_edits_reach_the_business_as_status_webhooks_on_postgresql_too() {
    on_postgresql(reviews_and_edits).await;
}

#[tokio::test]
async fn templates_are_deleted_by_name_or_id_and_hidden_from_other_businesses() {
    on_sqlite(deletion_and_isolation).await;
}

#[tokio::test]
async fn templates_are_deleted_and_hidden_from_other_businesses_on_postgresql_too() {
    on_postgresql(deletion_and_isolation).await;
}

async fn on_sqlite(scenario: impl AsyncFnOnce(&Node)) {
    let tmp = tempfile::tempdir().unwrap();
    run(scenario, tmp.path(), None).await;
}

async fn on_postgresql(scenario: impl AsyncFnOnce(&Node)) {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    run(scenario, tmp.path(), Some(&db.url)).await;
}

async fn run(scenario: impl AsyncFnOnce(&Node), tmp: &Path, database_url: Option<&str>) {
    let node = Node::start_on(&tmp.join("node"), database_url).await;
    scenario(&node).await;
    node.stop().await;
}

const WABA: &str = "1501";
const OTHER_WABA: &str = "1502";

/// `order_update` as SDKs submit it: lowercase types, a text header, a body with `{{1}}` and
/// `{{2}}` and its example, a footer, quick-reply and URL buttons.
fn order_update(language: &str, body: &str) -> Value {
    json!({
        "name": "order_update",
        "language": language,
        "category": "UTILITY",
        "components": [
            {"type": "header", "format": "text", "text": "Your order has shipped"},
            {"type": "body", "text": body, "example": {"body_text": [["Ana", "#4821"]]}},
            {"type": "footer", "text": "Reply STOP to opt out"},
            {"type": "buttons", "buttons": [
                {"type": "quick_reply", "text": "Stop updates"},
                {"type": "url", "text": "Track order", "url": "https://shop.example/track/{{1}}",
                 "example": ["https://shop.example/track/4821"]},
            ]},
        ],
    })
}

fn order_update_en() -> Value {
    order_update(
        "en_US",
        "Hi {{1}}, your order {{2}} is on its way. Track it any time with the button below.",
    )
}

fn order_update_es() -> Value {
    order_update(
        "es_ES",
        "Hola {{1}}, tu pedido {{2}} ya va en camino. Síguelo cuando quieras.",
    )
}

fn spring_sale() -> Value {
    json!({
        "name": "spring_sale",
        "language": "en_US",
        "category": "MARKETING",
        "components": [
            {"type": "BODY", "text": "Hi {{1}}, our spring sale starts today.",
             "example": {"body_text": [["Ana"]]}},
        ],
    })
}

fn collection() -> String {
    format!("/v23.0/{WABA}/message_templates")
}

/// The listing with a query.
fn list(query: &str) -> String {
    format!("{}?{query}", collection())
}

/// One Cloud API request (`path` may be a full URL, such as a paging link): (HTTP status,
/// body).
async fn api(
    node: &Node,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{}{path}", node.url)
    };
    let mut request = node.http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Creates a template, expecting success: its id.
async fn create(node: &Node, token: &str, definition: Value) -> String {
    let (status, created) = api(node, Method::POST, &collection(), token, Some(definition)).await;
    assert_eq!(status, 200, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// An operator review: `action` is approve, reject, pause or disable.
async fn review(node: &Node, id: &str, action: &str, reason: Option<&str>) -> Value {
    let body = reason.map(|r| json!({ "reason": r }));
    let (status, reviewed) = node
        .admin(
            Method::POST,
            &format!("/relay/v1/admin/templates/{id}/{action}"),
            body,
        )
        .await;
    assert_eq!(status, 200, "{action} {id}: {reviewed}");
    reviewed
}

/// Checks a Graph error envelope; returns its `error_data.details`.
fn assert_error(status: u16, body: &Value, http: u16, code: i64) -> String {
    assert_eq!(status, http, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("(#{code})")),
        "{body}"
    );
    assert!(error["fbtrace_id"].is_string(), "{body}");
    error["error_data"]["details"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a listing: {page}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The template status webhooks received, kept until a test waits for them.
#[derive(Default)]
struct TemplateHooks {
    seen: Vec<Value>,
    job_ids: HashSet<String>,
}

impl TemplateHooks {
    /// Waits for the `event` of template `id`, keeping the others received meanwhile; fails
    /// on a webhook not shaped as Meta's, or a job delivered twice.
    async fn wait(&mut self, shop: &mut Business, id: &str, event: &str) -> Value {
        let id: u64 = id.parse().unwrap();
        loop {
            if let Some(at) = self
                .seen
                .iter()
                .position(|v| v["message_template_id"] == id && v["event"] == event)
            {
                return self.seen.remove(at);
            }
            let (value, delivery) = shop.next_event().await;
            let entry = &delivery.event["entry"][0];
            if entry["changes"][0]["field"] != "message_template_status_update" {
                continue;
            }
            assert_eq!(delivery.event["object"], "whatsapp_business_account");
            assert_eq!(entry["id"], WABA, "{}", delivery.event);
            assert!(entry["time"].is_i64(), "{}", delivery.event);
            assert!(value["message_template_id"].is_u64(), "{value}");
            let job = delivery.event_id.clone().unwrap();
            assert!(job.starts_with(&format!("template.{WABA}.")), "{job}");
            assert!(self.job_ids.insert(job.clone()), "{job} delivered twice");
            self.seen.push(value);
        }
    }
}

async fn create_list_and_read(node: &Node) {
    let shop = Business::create(node, WABA, "2501", "15550001501", false).await;
    let token = shop.token.as_str();

    // Meta's answer, with the status after the platform's review (manual here: PENDING).
    let (status, created) = api(
        node,
        Method::POST,
        &collection(),
        token,
        Some(order_update_en()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let en_id = created["id"].as_str().unwrap().to_owned();
    assert!(en_id.bytes().all(|b| b.is_ascii_digit()), "{created}");
    assert_eq!(
        created,
        json!({"id": en_id, "status": "PENDING", "category": "UTILITY"})
    );

    // A broken definition is an invalid parameter naming the field.
    let mut bad = order_update_en();
    bad["name"] = json!("Order Update");
    let (status, error) = api(node, Method::POST, &collection(), token, Some(bad)).await;
    let details = assert_error(status, &error, 400, 100);
    assert!(details.starts_with("name"), "{details}");
    let mut bad = order_update_en();
    bad["components"][2]["text"] = json!("Reply {{1}} to opt out");
    let (status, error) = api(node, Method::POST, &collection(), token, Some(bad)).await;
    let details = assert_error(status, &error, 400, 100);
    assert!(details.contains("components[2].text"), "{details}");
    for body in [json!([1, 2]), json!("order_update")] {
        let (status, error) = api(node, Method::POST, &collection(), token, Some(body)).await;
        assert_error(status, &error, 400, 100);
    }
    let (status, error) = node
        .api_raw(&collection(), Some(token), "{\"name\": \"order_upd")
        .await;
    assert_error(status, &error, 400, 100);

    // The same name and language again: content in that language exists.
    let (status, error) = api(
        node,
        Method::POST,
        &collection(),
        token,
        Some(order_update_en()),
    )
    .await;
    assert_error(status, &error, 400, 100);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("already exists"), "{error}");

    let es_id = create(node, token, order_update_es()).await;
    let sale_id = create(node, token, spring_sale()).await;

    // Filters, and `fields`.
    let (status, page) = api(node, Method::GET, &list("name=order"), token, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), [en_id.as_str(), es_id.as_str()]);
    let first = &page["data"][0];
    assert_eq!(first["name"], "order_update");
    assert_eq!(first["language"], "en_US");
    assert_eq!(first["status"], "PENDING");
    assert_eq!(first["category"], "UTILITY");
    assert_eq!(first["parameter_format"], "POSITIONAL");
    assert_eq!(first["components"][0]["type"], "HEADER");
    assert_eq!(first["components"][3]["buttons"][1]["type"], "URL");
    let (_, page) = api(node, Method::GET, &list("category=marketing"), token, None).await;
    assert_eq!(ids(&page), [sale_id.as_str()]);
    let (_, page) = api(node, Method::GET, &list("language=es_ES"), token, None).await;
    assert_eq!(ids(&page), [es_id.as_str()]);
    let (_, page) = api(node, Method::GET, &list("status=APPROVED"), token, None).await;
    assert_eq!(page, json!({"data": []}));
    let (_, page) = api(node, Method::GET, &list("fields=name,status"), token, None).await;
    assert_eq!(
        page["data"][2],
        json!({"id": sale_id, "name": "spring_sale", "status": "PENDING"})
    );
    for (query, parameter) in [
        ("status=LIVE", "status"),
        ("category=OTP", "category"),
        ("limit=ten", "limit"),
        ("after=%21%21", "after"),
        ("before=bm9wZQ", "before"),
    ] {
        let (status, error) = api(node, Method::GET, &list(query), token, None).await;
        let details = assert_error(status, &error, 400, 100);
        assert!(details.starts_with(parameter), "{query}: {details}");
    }

    // One at a time: forwards by `next`, back by `previous` and by a `before` cursor.
    let (status, one) = api(node, Method::GET, &list("limit=1"), token, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(ids(&one), [en_id.as_str()]);
    assert!(one["paging"].get("previous").is_none(), "{one}");
    let next = one["paging"]["next"].as_str().unwrap();
    assert!(next.starts_with(&node.url), "{next}");
    assert!(next.contains("limit=1"), "{next}");
    let (_, two) = api(node, Method::GET, next, token, None).await;
    assert_eq!(ids(&two), [es_id.as_str()]);
    let next = two["paging"]["next"].as_str().unwrap();
    let (_, three) = api(node, Method::GET, next, token, None).await;
    assert_eq!(ids(&three), [sale_id.as_str()]);
    assert!(three["paging"].get("next").is_none(), "{three}");
    let previous = three["paging"]["previous"].as_str().unwrap();
    let (_, back) = api(node, Method::GET, previous, token, None).await;
    assert_eq!(back["data"], two["data"]);
    let before = three["paging"]["cursors"]["before"].as_str().unwrap();
    let query = format!("limit=2&before={before}");
    let (_, back) = api(node, Method::GET, &list(&query), token, None).await;
    assert_eq!(ids(&back), [en_id.as_str(), es_id.as_str()]);
    assert!(back["paging"].get("previous").is_none(), "{back}");
    assert!(back["paging"]["next"].is_string(), "{back}");

    // One template by id, whole or by `fields`, with or without a version and a slash.
    let (status, one) = api(node, Method::GET, &format!("/v23.0/{en_id}"), token, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], en_id.as_str());
    assert_eq!(one["name"], "order_update");
    assert_eq!(one["components"][1]["example"]["body_text"][0][1], "#4821");
    assert!(one.get("rejected_reason").is_none(), "{one}");
    let path = format!("/{en_id}/?fields=status");
    let (_, one) = api(node, Method::GET, &path, token, None).await;
    assert_eq!(one, json!({"id": en_id, "status": "PENDING"}));
}

async fn reviews_and_edits(node: &Node) {
    let mut shop = Business::create(node, WABA, "2501", "15550001501", false).await;
    let token = shop.token.clone();
    let mut hooks = TemplateHooks::default();
    let en_id = create(node, &token, order_update_en()).await;
    let es_id = create(node, &token, order_update_es()).await;
    let template = format!("/v23.0/{en_id}");

    // The operator approves: the business hears APPROVED, and never heard of the creations.
    review(node, &en_id, "approve", None).await;
    let approved = hooks.wait(&mut shop, &en_id, "APPROVED").await;
    assert_eq!(
        approved,
        json!({
            "event": "APPROVED",
            "message_template_id": en_id.parse::<u64>().unwrap(),
            "message_template_name": "order_update",
            "message_template_language": "en_US",
            "reason": "NONE",
        })
    );
    assert!(hooks.seen.is_empty(), "unexpected: {:?}", hooks.seen);

    // An edit is a new version, back to review.
    let body = "Hi {{1}}, order {{2}} is on its way to you.";
    let edit = json!({"components": order_update("en_US", body)["components"]});
    let (status, edited) = api(node, Method::POST, &template, &token, Some(edit)).await;
    assert_eq!((status, edited), (200, json!({"success": true})));
    let (_, one) = api(node, Method::GET, &template, &token, None).await;
    assert_eq!(one["status"], "PENDING");
    assert_eq!(one["components"][1]["text"], body);
    let admin_path = format!("/relay/v1/admin/templates/{en_id}");
    let (_, stored) = node.admin(Method::GET, &admin_path, None).await;
    assert_eq!(stored["version"], 2, "{stored}");
    hooks.wait(&mut shop, &en_id, "PENDING").await;
    let rename = json!({"name": "order_news"});
    let (status, error) = api(node, Method::POST, &template, &token, Some(rename)).await;
    let details = assert_error(status, &error, 400, 100);
    assert!(details.starts_with("name"), "{details}");
    let (status, error) = api(node, Method::POST, &template, &token, Some(json!(["x"]))).await;
    assert_error(status, &error, 400, 100);

    // A rejection carries its reason; the template then shows it.
    review(node, &en_id, "reject", Some("INVALID_FORMAT")).await;
    let rejected = hooks.wait(&mut shop, &en_id, "REJECTED").await;
    assert_eq!(rejected["reason"], "INVALID_FORMAT");
    let (_, one) = api(node, Method::GET, &template, &token, None).await;
    assert_eq!(one["status"], "REJECTED");
    assert_eq!(one["rejected_reason"], "INVALID_FORMAT");

    // Approved, paused, approved again: each one a webhook.
    review(node, &es_id, "approve", None).await;
    hooks.wait(&mut shop, &es_id, "APPROVED").await;
    review(node, &es_id, "pause", Some("quality")).await;
    let paused = hooks.wait(&mut shop, &es_id, "PAUSED").await;
    assert_eq!(paused["reason"], "quality");
    review(node, &es_id, "approve", None).await;
    hooks.wait(&mut shop, &es_id, "APPROVED").await;
    let (_, page) = api(node, Method::GET, &list("status=APPROVED"), &token, None).await;
    assert_eq!(ids(&page), [es_id.as_str()]);

    // Disabled for good, then deleted by the business.
    review(node, &es_id, "disable", Some("policy")).await;
    hooks.wait(&mut shop, &es_id, "DISABLED").await;
    let by_id = list(&format!("name=order_update&hsm_id={es_id}"));
    let (status, _) = api(node, Method::DELETE, &by_id, &token, None).await;
    assert_eq!(status, 200);
    let deleted = hooks.wait(&mut shop, &es_id, "PENDING_DELETION").await;
    assert_eq!(deleted["reason"], Value::Null);
}

async fn deletion_and_isolation(node: &Node) {
    let shop = Business::create(node, WABA, "2501", "15550001501", false).await;
    let other = Business::create(node, OTHER_WABA, "2502", "15550001502", false).await;
    let token = shop.token.as_str();
    let en_id = create(node, token, order_update_en()).await;
    let es_id = create(node, token, order_update_es()).await;
    let sale_id = create(node, token, spring_sale()).await;

    // Another business sees none of it and can touch none of it: to its token the WABA and
    // the template are nodes that do not exist.
    for (method, path, body) in [
        (Method::GET, format!("/v23.0/{en_id}"), None),
        (
            Method::POST,
            format!("/v23.0/{en_id}"),
            Some(json!({"category": "MARKETING"})),
        ),
        (Method::GET, collection(), None),
        (Method::POST, collection(), Some(spring_sale())),
        (Method::DELETE, list("name=order_update"), None),
    ] {
        let (status, error) = api(node, method.clone(), &path, &other.token, body).await;
        assert_error(status, &error, 404, 803);
        assert_eq!(error["error"]["type"], "GraphMethodException");
    }
    let own = format!("/v23.0/{OTHER_WABA}/message_templates");
    let (status, page) = api(node, Method::GET, &own, &other.token, None).await;
    assert_eq!((status, page), (200, json!({"data": []})));
    let theirs = format!("{own}?name=order_update&hsm_id={en_id}");
    let (status, error) = api(node, Method::DELETE, &theirs, &other.token, None).await;
    assert_error(status, &error, 404, 100);
    let (_, one) = api(node, Method::GET, &format!("/v23.0/{en_id}"), token, None).await;
    assert_eq!(one["category"], "UTILITY");
    assert_eq!(one["status"], "PENDING");

    // Bad deletes.
    let (status, error) = api(node, Method::DELETE, &collection(), token, None).await;
    let details = assert_error(status, &error, 400, 100);
    assert!(details.starts_with("name"), "{details}");
    let (status, error) = api(
        node,
        Method::DELETE,
        &list("name=x&hsm_id=abc"),
        token,
        None,
    )
    .await;
    let details = assert_error(status, &error, 400, 100);
    assert!(details.starts_with("hsm_id"), "{details}");
    let (status, error) = api(node, Method::PUT, &collection(), token, None).await;
    assert_error(status, &error, 405, 100);
    let (status, error) = api(
        node,
        Method::DELETE,
        &format!("/v23.0/{en_id}"),
        token,
        None,
    )
    .await;
    assert_error(status, &error, 405, 100);

    // One language by `hsm_id`, then every language of a name; then nothing is found.
    let by_id = list(&format!("name=order_update&hsm_id={es_id}"));
    let (status, deleted) = api(node, Method::DELETE, &by_id, token, None).await;
    assert_eq!((status, deleted), (200, json!({"success": true})));
    let (_, page) = api(node, Method::GET, &list("name=order"), token, None).await;
    assert_eq!(ids(&page), [en_id.as_str()]);
    let (status, deleted) = api(
        node,
        Method::DELETE,
        &list("name=order_update"),
        token,
        None,
    )
    .await;
    assert_eq!((status, deleted), (200, json!({"success": true})));
    let (status, error) = api(
        node,
        Method::DELETE,
        &list("name=order_update"),
        token,
        None,
    )
    .await;
    assert_error(status, &error, 404, 100);
    let (_, page) = api(node, Method::GET, &collection(), token, None).await;
    assert_eq!(ids(&page), [sale_id.as_str()]);
    let (_, page) = api(node, Method::GET, &list("status=DELETED"), token, None).await;
    assert_eq!(ids(&page), [en_id.as_str(), es_id.as_str()]);

    // A business with no number on the server has nowhere to keep templates yet.
    let (status, _) = node
        .admin(
            Method::POST,
            "/admin/v1/businesses",
            Some(json!({ "waba_id": "1503", "name": "Shop 1503", "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, issued) = node
        .admin(
            Method::POST,
            "/admin/v1/businesses/1503/tokens",
            Some(json!({ "label": "test" })),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let (status, error) = api(
        node,
        Method::GET,
        "/v23.0/1503/message_templates",
        issued["token"].as_str().unwrap(),
        None,
    )
    .await;
    let details = assert_error(status, &error, 400, 133010);
    assert!(details.contains("no phone number"), "{details}");
}
