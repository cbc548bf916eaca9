use serde_json::{Value, json};

use crate::testkit::{Harness, fresh_tenant, numbered, open_inbox, pull_all};
use crate::{
    ClaimQuery, Error, Inbox, Limits, MAX_PAYLOAD_DEPTH, NewEvent, PullQuery, Result, TenantId,
};

/// Twelve concurrent ingests of the largest payload the inbox takes, and
/// the longest idempotency key in four-byte characters: each is stored
/// (a backend that commits concurrent calls together must keep each
/// transaction within its storage's limits), and the key finds its event.
pub async fn the_largest_payloads_and_keys_are_stored_side_by_side(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let limits = inbox.limits();
    // {"p":"xxx…"} is 8 bytes of framing around the string.
    let payload = json!({ "p": "x".repeat(limits.max_payload_bytes - 8) });
    let key = "😀".repeat(limits.max_idempotency_key_chars);
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let (inbox, tenant) = (inbox.clone(), tenant.clone());
            let mut event = NewEvent::new(payload.clone()).with_source(format!("writer-{n}"));
            if n == 0 {
                event = event.with_idempotency_key(key.clone());
            }
            tokio::spawn(async move { inbox.ingest(&tenant, event).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task").expect("stored").id);
    }
    assert_eq!(
        inbox.find_by_key(&tenant, &key).await.expect("find"),
        Some(ids[0])
    );
    let stored = pull_all(&inbox, &tenant, PullQuery::new().limit(4)).await;
    assert_eq!(stored.len(), 12);
    assert!(
        stored
            .iter()
            .all(|e| e.payload.len() == limits.max_payload_bytes)
    );
}

/// Text of every kind round-trips exactly: emoji, CJK, right-to-left, NUL
/// and other control characters inside the payload, line separators,
/// non-characters, numbers at the edges of their range.
pub async fn unicode_round_trips(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let tricky = "a\u{0}b\u{1}\u{1f}\u{7f} 😀👩‍👩‍👧 漢字 עברית العربية \u{2028}\u{2029} \u{fffe}\u{ffff}\u{10ffff} \u{feff}\"\\/\n\t";
    let payload = json!({
        tricky: tricky,
        "max_i64": i64::MAX, "min_i64": i64::MIN, "max_u64": u64::MAX,
        "float": 1.5e300, "tiny": -2.5e-300,
        "nested": [{ "ü": ["\u{0}"] }],
    });
    let event = NewEvent::new(payload.clone())
        .with_topic("ßtöpic 😀")
        .with_type("тип")
        .with_source("源")
        .with_client_id("クライアント")
        .with_idempotency_key("ключ 🔑");
    let id = inbox
        .ingest(&tenant, event.clone())
        .await
        .expect("ingest")
        .id;
    let got = inbox.get(&tenant, id).await.expect("get").expect("stored");
    assert_eq!(got.payload, payload);
    assert_eq!(got.topic.as_deref(), Some("ßtöpic 😀"));
    assert_eq!(got.event_type.as_deref(), Some("тип"));
    assert_eq!(got.source.as_deref(), Some("源"));
    assert_eq!(got.client_id.as_deref(), Some("クライアント"));
    assert_eq!(got.idempotency_key.as_deref(), Some("ключ 🔑"));
    let listed = pull_all(
        &inbox,
        &tenant,
        PullQuery::new().topic("ßtöpic 😀").source("源"),
    )
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].payload, payload);
    let again = inbox.ingest(&tenant, event).await.expect("retry");
    assert_eq!((again.id, again.duplicate), (id, true));
}

/// A payload over the limit is `PayloadTooLarge` naming size and limit, and
/// nothing is stored; a payload of exactly the limit is accepted.
pub async fn oversized_payload_is_rejected(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let limit = inbox.limits().max_payload_bytes;
    assert_eq!(
        Limits::default().max_payload_bytes,
        512 * 1024,
        "the default"
    );
    let declared = Limits::default().within(&inbox.capabilities());
    assert_eq!(
        limit, declared.max_payload_bytes,
        "512 KiB, or less if the backend keeps less"
    );
    // {"p":"xxx…"} is 8 bytes of framing around the string.
    let sized = |bytes: usize| NewEvent::new(json!({ "p": "x".repeat(bytes - 8) }));
    let r = inbox
        .ingest(&tenant, sized(limit + 1).with_idempotency_key("big"))
        .await;
    assert!(
        matches!(r, Err(Error::PayloadTooLarge { size, limit: l }) if size == limit + 1 && l == limit),
        "{r:?}"
    );
    let message = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains(&limit.to_string()),
        "the message names the limit: {message}"
    );
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
    assert_eq!(inbox.find_by_key(&tenant, "big").await.expect("find"), None);
    let id = inbox
        .ingest(&tenant, sized(limit))
        .await
        .expect("exactly the limit")
        .id;
    let got = inbox.get(&tenant, id).await.expect("get").expect("stored");
    assert_eq!(
        serde_json::to_string(&got.payload).expect("json").len(),
        limit
    );
}

/// Every kind of bad input is a typed error and leaves the inbox as it was.
pub async fn bad_input_changes_nothing(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let kept = inbox
        .ingest(&tenant, numbered(1).with_idempotency_key("kept"))
        .await
        .expect("ingest");

    for bad in ["", &"t".repeat(200), "a b", "tenant\u{0}", "ü", "a/b"] {
        let r = TenantId::new(bad);
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "tenant {bad:?}: {r:?}"
        );
    }
    assert!(TenantId::new("t".repeat(128)).is_ok());

    let huge = NewEvent::new(json!({ "blob": "x".repeat(10 * 1024 * 1024) }));
    let cases: Vec<(NewEvent, &str)> = vec![
        (NewEvent::new(json!([1, 2, 3])), "array payload"),
        (NewEvent::new(json!("text")), "string payload"),
        (NewEvent::new(json!(42)), "number payload"),
        (NewEvent::new(Value::Null), "null payload"),
        (NewEvent::new(json!(true)), "bool payload"),
        (
            numbered(2).with_idempotency_key("k".repeat(10_000)),
            "10 000 char key",
        ),
        (numbered(2).with_idempotency_key(""), "empty key"),
        (numbered(2).with_idempotency_key("a\u{0}b"), "NUL in key"),
        (numbered(2).with_topic("top\u{0}ic"), "NUL in topic"),
        (numbered(2).with_source("line\nbreak"), "newline in source"),
        (numbered(2).with_type("t".repeat(257)), "257 char type"),
        (
            numbered(2).with_client_id("c".repeat(1000)),
            "1000 char client id",
        ),
    ];
    for (event, what) in cases {
        let r = inbox.ingest(&tenant, event.clone()).await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{what}: {r:?}");
        let r = inbox.ingest_batch(&tenant, vec![numbered(3), event]).await;
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "{what} in a batch: {r:?}"
        );
    }
    let r = inbox.ingest(&tenant, huge).await;
    assert!(
        matches!(r, Err(Error::PayloadTooLarge { .. })),
        "10 MB payload: {r:?}"
    );
    assert!(!Error::PayloadTooLarge { size: 1, limit: 0 }.is_retryable());

    assert_unchanged(&inbox, &tenant, kept.id).await;
}

async fn assert_unchanged(inbox: &Inbox, tenant: &TenantId, kept: crate::EventId) {
    let events = pull_all(inbox, tenant, PullQuery::new()).await;
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(
        inbox.find_by_key(tenant, "kept").await.expect("find"),
        Some(kept)
    );
}

/// `{"a":[[…[1]…]]}`, `depth` arrays and objects deep (2 bytes a level,
/// so 100 000 levels stay under the size limit), built without recursion.
fn nested_value(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 1..depth {
        value = Value::Array(vec![value]);
    }
    let mut object = serde_json::Map::new();
    object.insert("a".to_owned(), value);
    Value::Object(object)
}

/// The same as JSON text.
fn nested_text(depth: usize) -> String {
    let levels = depth.saturating_sub(1);
    format!(r#"{{"a":{}1{}}}"#, "[".repeat(levels), "]".repeat(levels))
}

fn assert_too_deep<T: std::fmt::Debug>(r: Result<T>, limit: usize, what: &str) {
    match r {
        Err(Error::InvalidInput(message)) => assert!(
            message.contains(&limit.to_string()) && message.contains("max_payload_depth"),
            "{what}: the message names the limit: {message}"
        ),
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    }
}

/// A payload nested deeper than `Limits::max_payload_depth` (default 64,
/// at most 127: what the decoder reads back) is refused with `InvalidInput`
/// naming the limit, however deep, as a value or as text, alone or in a
/// batch, and nothing is stored; the host does not overflow its stack on
/// 100 000 levels. What is accepted reads back and decodes, and the
/// tenant's other events keep flowing through pull, get, claim and ack.
pub async fn deep_payloads_are_refused_and_the_tenant_keeps_flowing(harness: &dyn Harness) {
    let (inbox, _) = open_inbox(harness).await;
    let tenant = fresh_tenant();
    let limit = inbox.limits().max_payload_depth;
    assert_eq!(limit, 64, "the default limit");
    let ingest = async |inbox: &Inbox, event: NewEvent| {
        inbox.ingest(&tenant, event).await.map(|stored| stored.id)
    };
    let first = ingest(&inbox, numbered(1)).await.expect("a plain event");
    let at_limit = ingest(&inbox, NewEvent::new(nested_value(limit)))
        .await
        .expect("a value at the limit");
    let at_limit_text = ingest(&inbox, NewEvent::from_json(nested_text(limit)))
        .await
        .expect("text at the limit");
    for depth in [limit + 1, 127, 128, 129, 1_000, 100_000] {
        let r = ingest(&inbox, NewEvent::new(nested_value(depth))).await;
        assert_too_deep(r, limit, &format!("a value {depth} deep"));
        let r = ingest(&inbox, NewEvent::from_json(nested_text(depth))).await;
        assert_too_deep(r, limit, &format!("text {depth} deep"));
        let batch = vec![numbered(2), NewEvent::from_json(nested_text(depth))];
        let r = inbox.ingest_batch(&tenant, batch).await;
        assert!(
            matches!(&r, Err(Error::InvalidInput(m)) if m.contains("item 1")),
            "{depth} deep in a batch: {r:?}"
        );
    }
    let deep = Inbox::builder(inbox.backend().clone())
        .limits(Limits::default().with_max_payload_depth(10_000))
        .build();
    assert_eq!(deep.limits().max_payload_depth, MAX_PAYLOAD_DEPTH);
    let deepest = ingest(&deep, NewEvent::from_json(nested_text(MAX_PAYLOAD_DEPTH)))
        .await
        .expect("127 levels with the limit raised");
    let r = ingest(
        &deep,
        NewEvent::from_json(nested_text(MAX_PAYLOAD_DEPTH + 1)),
    )
    .await;
    assert_too_deep(r, MAX_PAYLOAD_DEPTH, "128 levels with the limit raised");
    let last = ingest(&inbox, numbered(3))
        .await
        .expect("a plain event after");

    let expected = vec![first, at_limit, at_limit_text, deepest, last];
    let listed = pull_all(&inbox, &tenant, PullQuery::new()).await;
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
    assert_eq!(listed[1].payload, nested_value(limit));
    assert_eq!(listed[2].payload, nested_value(limit));
    assert_eq!(listed[3].payload, nested_value(MAX_PAYLOAD_DEPTH));
    let got = inbox
        .get(&tenant, deepest)
        .await
        .expect("get")
        .expect("kept");
    got.payload
        .as_value()
        .expect("the deepest accepted payload decodes");
    let claimed = inbox
        .claim(&tenant, ClaimQuery::new().limit(10))
        .await
        .expect("claim");
    let mut claimed_ids: Vec<_> = claimed.iter().map(|l| l.event.id).collect();
    claimed_ids.sort();
    assert_eq!(claimed_ids, expected, "claims take every event");
    for leased in claimed {
        inbox.ack_lease(&tenant, leased.token).await.expect("ack");
    }
    assert!(pull_all(&inbox, &tenant, PullQuery::new()).await.is_empty());
}
