//! The operator's review through the admin API, with its audit trail, and from the command
//! line (`ventana admin templates …`); the lint policy.

use super::*;

on_both_backends!(
    the_operator_reviews_through_the_admin_api_and_the_audit_trail_says_who_and_why,
    a_lint_policy_rejects_by_rule_and_approves_clean_templates,
    the_operator_reviews_from_the_command_line,
);

async fn the_operator_reviews_through_the_admin_api_and_the_audit_trail_says_who_and_why(
    backend: Backend,
) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3006", "15550003006", false).await;
    let created = shop.create(shipped("order_shipped")).await;
    let id = created.id.as_str();
    // The creation is the business's first event: the cursor to follow what comes next.
    let start = match shop.ask(Op::TemplateEvents { after: 0, limit: 0 }).await {
        Ok(Reply::TemplateEvents { events }) => {
            assert_eq!(events.len(), 1);
            assert_eq!(
                (events[0].from, events[0].to),
                (None, TemplateStatus::Pending)
            );
            events[0].seq
        }
        other => panic!("expected events, got {other:?}"),
    };

    // Without the operator token: 401. A rejection needs a reason.
    let response = lab
        .node
        .http
        .post(format!(
            "{}/relay/v1/admin/templates/{id}/approve",
            lab.node.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, error) = lab.review(id, "reject", json!({ "by": "alice" })).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reason")
    );

    let (status, rejected) = lab
        .review(
            id,
            "reject",
            json!({ "by": "alice", "reason": "the body is vague" }),
        )
        .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "REJECTED");
    let seen = shop.template(Op::TemplateGet { id: id.into() }).await;
    assert_eq!(seen.status, TemplateStatus::Rejected);
    assert_eq!(seen.reason.as_deref(), Some("the body is vague"));

    // A second look approves it; pausing and reinstating; a forbidden move is a 409.
    let (status, approved) = lab.review(id, "approve", json!({ "by": "bob" })).await;
    assert_eq!(
        (status, approved["status"].as_str()),
        (200, Some("APPROVED"))
    );
    assert_eq!(
        shop.template(Op::TemplateGet { id: id.into() })
            .await
            .reason,
        None
    );
    let (status, error) = lab.review(id, "reject", json!({ "reason": "late" })).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(
        error["error"]["message"],
        format!("template {id} is APPROVED and cannot be rejected")
    );
    let (status, paused) = lab
        .review(id, "pause", json!({ "reason": "users report it as spam" }))
        .await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("PAUSED")));
    let (status, _) = lab.review(id, "pause", json!({})).await;
    assert_eq!(status, 409);
    // An empty body is fine: defaults.
    let response = lab
        .node
        .http
        .post(format!(
            "{}/relay/v1/admin/templates/{id}/approve",
            lab.node.url
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, stale) = lab.review(id, "disable", json!({ "version": 7 })).await;
    assert_eq!(status, 409, "{stale}");
    let (status, disabled) = lab
        .review(
            id,
            "disable",
            json!({ "by": "carol", "reason": "abuse", "version": 1 }),
        )
        .await;
    assert_eq!(
        (status, disabled["status"].as_str()),
        (200, Some("DISABLED"))
    );
    let (status, _) = lab.review(id, "approve", json!({})).await;
    assert_eq!(status, 409);

    // Unknown templates and actions are 404s; a malformed body is a 400.
    let (status, error) = lab.review("999", "approve", json!({})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = lab.review(id, "bless", json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = lab.review(id, "approve", json!({ "by": "a b" })).await;
    assert_eq!(status, 400);
    let (status, _) = lab.review(id, "approve", json!({ "because": "x" })).await;
    assert_eq!(status, 400);
    let (status, _) = lab.admin_get("/relay/v1/admin/templates/999").await;
    assert_eq!(status, 404);

    // The audit trail: who moved it, from what to what, and why.
    let (status, shown) = lab
        .admin_get(&format!("/relay/v1/admin/templates/{id}"))
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "DISABLED");
    assert_eq!(shown["components"][0]["type"], "BODY");
    assert_eq!(shown["lint"], json!([]));
    let trail: Vec<(Value, Value, Value, Value)> = shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["version"], 1);
            assert!(e["seq"].is_i64() && e["at"].is_i64());
            (
                e["from"].clone(),
                e["to"].clone(),
                e["actor"].clone(),
                e["reason"].clone(),
            )
        })
        .collect();
    let step =
        |from: Value, to: &str, actor: &str, reason: Value| (from, json!(to), json!(actor), reason);
    assert_eq!(
        trail,
        vec![
            step(Value::Null, "PENDING", "business", Value::Null),
            step(
                json!("PENDING"),
                "REJECTED",
                "operator:alice",
                json!("the body is vague")
            ),
            step(json!("REJECTED"), "APPROVED", "operator:bob", Value::Null),
            step(
                json!("APPROVED"),
                "PAUSED",
                "operator:operator",
                json!("users report it as spam")
            ),
            step(
                json!("PAUSED"),
                "APPROVED",
                "operator:operator",
                Value::Null
            ),
            step(
                json!("APPROVED"),
                "DISABLED",
                "operator:carol",
                json!("abuse")
            ),
        ]
    );

    // The business follows the same changes as events after a cursor, without the actors.
    let events = match shop
        .ask(Op::TemplateEvents {
            after: start,
            limit: 2,
        })
        .await
    {
        Ok(Reply::TemplateEvents { events }) => events,
        other => panic!("expected events, got {other:?}"),
    };
    let moves: Vec<_> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        moves,
        vec![
            (Some(TemplateStatus::Pending), TemplateStatus::Rejected),
            (Some(TemplateStatus::Rejected), TemplateStatus::Approved),
        ]
    );
    assert_eq!(events[0].reason.as_deref(), Some("the body is vague"));
    assert_eq!(events[0].template_id, id);
    let rest = match shop
        .ask(Op::TemplateEvents {
            after: events[1].seq,
            limit: 100,
        })
        .await
    {
        Ok(Reply::TemplateEvents { events }) => events,
        other => panic!("expected events, got {other:?}"),
    };
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[2].to, TemplateStatus::Disabled);
    lab.stop().await;
}

async fn a_lint_policy_rejects_by_rule_and_approves_clean_templates(backend: Backend) {
    let policy = TemplatePolicy {
        review: Review::Lint,
        ..TemplatePolicy::default()
    };
    let lab = backend.start(policy).await;
    let shop = lab.business("3007", "15550003007", false).await;

    let promotional = definition(
        "weekly_update",
        "en_US",
        "UTILITY",
        "Big sale on every shoe in the shop this week.",
    );
    let rejected = shop.create(promotional).await;
    assert_eq!(rejected.status, TemplateStatus::Rejected);
    let reason = rejected.reason.clone().unwrap();
    assert!(reason.starts_with("components[0].text: "), "{reason}");
    let (_, shown) = lab
        .admin_get(&format!("/relay/v1/admin/templates/{}", rejected.id))
        .await;
    let decision = &shown["audit"][1];
    assert_eq!(decision["actor"], "rule:category_mismatch");
    assert_eq!(decision["to"], "REJECTED");
    assert_eq!(decision["reason"], reason.as_str());
    assert_eq!(shown["lint"][0]["rule"], "category_mismatch");

    let clean = shop.create(shipped("order_shipped")).await;
    assert_eq!(clean.status, TemplateStatus::Approved);
    assert_eq!(clean.reason, None);
    let (_, shown) = lab
        .admin_get(&format!("/relay/v1/admin/templates/{}", clean.id))
        .await;
    assert_eq!(shown["audit"][1]["actor"], "rule:lint");
    assert_eq!(shown["audit"][1]["reason"], "no lint findings");

    // An operator may still overturn a rule's rejection.
    lab.approve(&rejected.id).await;
    // An edit is reviewed by the same rules.
    let edited = shop
        .template(Op::TemplateEdit {
            id: clean.id.clone(),
            edit: json!({"components": [{"type": "BODY", "text": "Deals and discounts inside"}]}),
        })
        .await;
    assert_eq!(
        (edited.version, edited.status),
        (2, TemplateStatus::Rejected)
    );
    lab.stop().await;
}

/// Runs `ventana admin --url … --token … <args>`: (success, stdout, stderr).
async fn admin_command(lab: &Lab, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ventana"));
    command
        .args(["admin", "--url", &lab.node.url, "--token", ADMIN_TOKEN])
        .args(args)
        .env_remove("VENTANA_ADMIN_TOKEN")
        .env_remove("VENTANA_URL")
        .env_remove("VENTANA_CONFIG")
        .current_dir(lab.data_dir());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn admin_json(lab: &Lab, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = admin_command(lab, args).await;
    assert!(ok, "{args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

async fn the_operator_reviews_from_the_command_line(backend: Backend) {
    let lab = backend.start(TemplatePolicy::default()).await;
    let shop = lab.business("3015", "15550003015", false).await;
    let first = shop.create(shipped("order_shipped")).await;
    let second = shop.create(shipped("order_delayed")).await;

    let queue = admin_json(
        &lab,
        &[
            "templates",
            "list",
            "--status",
            "PENDING",
            "--waba-id",
            "3015",
            "--json",
        ],
    )
    .await;
    let queued: Vec<&str> = queue["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(queued, [first.id.as_str(), second.id.as_str()]);
    let (ok, listed, _) = admin_command(&lab, &["templates", "list", "--limit", "1"]).await;
    assert!(ok);
    assert!(
        listed.contains("order_shipped") && listed.contains("PENDING"),
        "{listed}"
    );
    assert!(listed.contains("(more: --after "), "{listed}");

    let approved = admin_json(
        &lab,
        &["templates", "approve", &first.id, "--by", "alice", "--json"],
    )
    .await;
    assert_eq!(approved["status"], "APPROVED");
    // A rejection without a reason does not even reach the node.
    let (ok, _, stderr) = admin_command(&lab, &["templates", "reject", &second.id]).await;
    assert!(!ok);
    assert!(stderr.contains("--reason"), "{stderr}");
    let (ok, said, _) = admin_command(
        &lab,
        &["templates", "reject", &second.id, "--reason", "too vague"],
    )
    .await;
    assert!(ok);
    assert_eq!(
        said.trim(),
        format!(
            "template {} (order_delayed, en_US) is now REJECTED",
            second.id
        )
    );
    admin_json(
        &lab,
        &[
            "templates",
            "pause",
            &first.id,
            "--reason",
            "complaints",
            "--json",
        ],
    )
    .await;
    // The node's refusal comes back as the command's error.
    let (ok, _, stderr) = admin_command(&lab, &["templates", "pause", &first.id]).await;
    assert!(!ok);
    assert!(
        stderr.contains("409") && stderr.contains("cannot be paused"),
        "{stderr}"
    );
    admin_json(&lab, &["templates", "disable", &first.id, "--json"]).await;

    let shown = admin_json(&lab, &["templates", "show", &first.id, "--json"]).await;
    let actors: Vec<&str> = shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        actors,
        [
            "business",
            "operator:alice",
            "operator:operator",
            "operator:operator"
        ]
    );
    let (ok, human, _) = admin_command(&lab, &["templates", "show", &first.id]).await;
    assert!(ok);
    assert!(
        human.contains("BODY: Your parcel left our warehouse"),
        "{human}"
    );
    assert!(
        human.contains("APPROVED -> PAUSED") && human.contains(": complaints"),
        "{human}"
    );
    lab.stop().await;
}
