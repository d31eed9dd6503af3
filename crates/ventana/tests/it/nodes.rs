//! In-process nodes sharing one PostgreSQL database: what one node learns, every node knows
//! at once. (Processes killed mid-stream are in `cluster`.)

use crate::harness::*;

#[tokio::test]
async fn a_number_added_through_one_node_is_served_at_once_by_another() {
    let Some(db) = Database::create().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Node::start_on(&tmp.path().join("a"), Some(&db.url)).await;
    let b = Node::start_on(&tmp.path().join("b"), Some(&db.url)).await;
    // Added through node A's admin API; node B is asked right after, with no pause.
    let shop = Business::create(&a, "4501", "34501", "15550004501", false).await;
    let stranger: ventana_core::PhoneNumber = "34600004501".parse().unwrap();
    let (status, answer) = shop.send_text(&b, &stranger, "hello").await;
    assert_ne!(
        answer["error"]["code"], 803,
        "node B does not know the number: {answer}"
    );
    // It is known, and refused for what it is: nobody on Ventana by that number wrote first.
    assert_eq!(status, 400, "{answer}");
    let read = b
        .http
        .get(format!("{}/v23.0/{}", b.url, shop.phone_number_id))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // A number that does not exist is still unknown.
    let missing = b
        .api_raw("/v23.0/39999/messages", Some(&shop.token), "{}")
        .await;
    assert_eq!(
        (missing.0, missing.1["error"]["code"].clone()),
        (404, 803.into())
    );
    b.stop().await;
    a.stop().await;
}
