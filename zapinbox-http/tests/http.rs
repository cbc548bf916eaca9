//! ZapStream's HTTP contract, served on every storage the test command
//! starts: each rule below runs once per storage, as
//! `sqlite::rule`, `kafka::rule`, `dynamo::rule`, against a real server
//! on an ephemeral port.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::sse::Reader;
use support::{Kind, Server, send};

/// One test per rule and storage.
macro_rules! http_rules {
    ($($rule:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() { crate::$rule(crate::support::sqlite()).await }
        )* }
        mod kafka { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() { crate::$rule(crate::support::kafka()).await }
        )* }
        mod dynamo { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() { crate::$rule(crate::support::dynamo()).await }
        )* }
    };
}

http_rules!(
    health_reads_the_storage,
    an_event_goes_in_and_is_listed_as_zapstream_shows_it,
    a_reused_idempotency_key_is_409_with_the_first_id,
    concurrent_posts_with_one_key_store_one_event,
    bad_bodies_are_refused_and_nothing_is_stored,
    oversized_payloads_and_bodies_are_refused,
    long_keys_and_headers_are_refused_cleanly,
    inbox_parameters_are_checked_as_zapstream_checks_them,
    pages_walk_newest_first_and_filters_combine,
    ack_and_delete_settle_only_the_callers_events,
    credentials_are_required_and_checked,
    jwt_bearer_tokens_name_tenant_and_client,
    the_rate_limit_answers_429_with_retry_after,
    the_daily_quota_answers_429_until_tomorrow,
    the_stream_shows_new_events_and_resumes_after_the_last_id,
    the_stream_is_the_callers_alone,
    streams_are_limited_per_tenant,
    shutdown_finishes_requests_and_closes_streams,
    cors_allows_configured_origins_only,
    usage_reports_billable_totals,
    metrics_openapi_and_unknown_routes_answer,
);

const SOON: Duration = Duration::from_secs(10);

async fn health_reads_the_storage(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let health = send(server.request(Method::GET, "/health")).await;
    health.expect(200);
    assert_eq!(health.body["status"], "healthy", "{health:?}");
    let detailed = send(server.request(Method::GET, "/health/detailed")).await;
    detailed.expect(200);
    let storage = &detailed.body["components"]["storage"];
    let name = format!("{:?}", server.kind).to_lowercase();
    assert_eq!(storage["type"], name.as_str(), "{detailed:?}");
    assert!(storage["latency_ms"].as_f64().is_some(), "{detailed:?}");
    assert!(health.header("x-request-id").is_some());
}

async fn an_event_goes_in_and_is_listed_as_zapstream_shows_it(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let payload = json!({ "big": 9_223_372_036_854_775_807_i64, "f": 1.5, "s": "é😀\u{0}", "nested": { "a": [1, 2] } });
    let created = server
        .post(json!({ "source": "shop", "type": "order.created", "topic": "orders", "payload": payload, "ignored": true }))
        .await;
    created.expect(200);
    assert_eq!(created.body["status"], "accepted");
    let id = created.body["id"].as_str().expect("an id");
    let received = created.body["received_at"].as_str().expect("received_at");
    assert!(
        received.ends_with("000Z") && received.len() == 27,
        "{received}"
    );

    let page = server.get("/inbox").await;
    page.expect(200);
    assert_eq!(page.body["next_cursor"], Value::Null);
    let item = &page.body["events"][0];
    assert_eq!(item["id"], id);
    assert_eq!(item["created_at"], received);
    assert_eq!(
        (&item["source"], &item["type"], &item["topic"]),
        (&json!("shop"), &json!("order.created"), &json!("orders"))
    );
    assert_eq!(item["payload"], payload);
    let mut keys: Vec<&str> = item
        .as_object()
        .expect("an item")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "payload", "source", "topic", "type"]
    );

    // The body's Content-Type does not matter, as with ZapStream.
    let plain = send(
        server
            .authed(Method::POST, "/events")
            .header("content-type", "text/plain")
            .body(r#"{"payload":{"plain":true}}"#),
    )
    .await;
    plain.expect(200);
}

async fn a_reused_idempotency_key_is_409_with_the_first_id(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let post = |key: &str, n: u64| {
        server
            .authed(Method::POST, "/events")
            .header("X-Idempotency-Key", key.to_owned())
            .json(&json!({ "payload": { "n": n } }))
    };
    let first = send(post("order-1", 1)).await;
    first.expect(200);
    for n in [1, 2] {
        let again = send(post("order-1", n)).await;
        again.expect(409);
        assert_eq!(again.code(), "CONFLICT");
        assert_eq!(
            again.body["error"]["existing_event_id"], first.body["id"],
            "{again:?}"
        );
    }
    // Acked, the key stays taken.
    let id = first.body["id"].as_str().expect("id");
    send(server.authed(Method::POST, &format!("/inbox/{id}/ack")))
        .await
        .expect(200);
    send(post("order-1", 3)).await.expect(409);
    // Another tenant has keys of its own; an empty key is no key.
    let theirs = send(
        server
            .other(Method::POST, "/events")
            .header("X-Idempotency-Key", "order-1")
            .json(&json!({ "payload": {} })),
    )
    .await;
    theirs.expect(200);
    send(post("", 4)).await.expect(200);
    send(post("", 4)).await.expect(200);
}

async fn concurrent_posts_with_one_key_store_one_event(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let posts = (0..20).map(|n| {
        send(
            server
                .authed(Method::POST, "/events")
                .header("X-Idempotency-Key", "once")
                .json(&json!({ "payload": { "n": n } })),
        )
    });
    let answers = futures::future::join_all(posts).await;
    let created: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(created.len(), 1, "{answers:#?}");
    let first = &created[0].body["id"];
    for conflict in answers.iter().filter(|a| a.status != 200) {
        conflict.expect(409);
        assert_eq!(&conflict.body["error"]["existing_event_id"], first);
    }
    assert_eq!(server.listed("").await.len(), 1);
}

async fn bad_bodies_are_refused_and_nothing_is_stored(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let deep = format!(
        "{{\"payload\":{}1{}}}",
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );
    let deep_array = format!(
        "{{\"payload\":{{\"a\":{}1{}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json".to_vec(),
        br#"{"payload":{}} trailing"#.to_vec(),
        br#"[{"payload":{}}]"#.to_vec(),
        br#""x""#.to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        br#"{"payload":"x"}"#.to_vec(),
        br#"{"payload":7}"#.to_vec(),
        br#"{"payload":[1]}"#.to_vec(),
        br#"{"payload":null}"#.to_vec(),
        br#"{"payload":true}"#.to_vec(),
        br#"{"payload":{},"topic":5}"#.to_vec(),
        br#"{"payload":{},"source":{}}"#.to_vec(),
        br#"{"payload":{"s":"\ud800"}}"#.to_vec(),
        br#"{"payload":{"s":"\udc00x"}}"#.to_vec(),
        br#"{"payload":{},"topic":"\ud83d"}"#.to_vec(),
        b"{\"payload\":{\"s\":\"\xff\xfe\"}}".to_vec(),
        b"{\"payload\":{},\"type\":\"\xc3\"}".to_vec(),
        deep.into_bytes(),
        deep_array.into_bytes(),
    ];
    for body in bodies {
        let answer = send(
            server
                .authed(Method::POST, "/events")
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        answer.expect(422);
        assert_eq!(
            answer.code(),
            "VALIDATION_ERROR",
            "{:?}",
            String::from_utf8_lossy(&body)
        );
    }
    assert!(server.listed("").await.is_empty(), "nothing was stored");
    // Paired surrogates are fine.
    let emoji = send(
        server
            .authed(Method::POST, "/events")
            .body(r#"{"payload":{"s":"\ud83d\ude00"}}"#),
    )
    .await;
    emoji.expect(200);
    let page = server.get("/inbox").await;
    assert_eq!(page.body["events"][0]["payload"]["s"], "😀");
}

async fn oversized_payloads_and_bodies_are_refused(kind: Kind) {
    let server = Server::start(kind, &[("MAX_PAYLOAD_BYTES", "1000")]).await;
    // `{"p":"…"}`: 8 bytes around the string.
    let at_cap = json!({ "payload": { "p": "x".repeat(992) } });
    server.post(at_cap).await.expect(200);
    let over = server
        .post(json!({ "payload": { "p": "x".repeat(993) } }))
        .await;
    over.expect(400);
    assert_eq!(over.code(), "VALIDATION_ERROR");
    let huge = "x".repeat(2 << 20);
    // Refused before it is read: the client sees the 413, or, if it was
    // still sending, the connection closed under it. On a client of its
    // own: the server closes that connection.
    let body = reqwest::Client::new()
        .post(format!("{}/events", server.url))
        .header("X-API-Key", &server.key)
        .body(format!(r#"{{"payload":{{"p":"{huge}"}}}}"#))
        .send()
        .await;
    match body {
        Ok(response) => {
            assert_eq!(response.status(), 413, "{response:?}");
            let envelope: Value = response.json().await.expect("an envelope");
            assert_eq!(envelope["error"]["code"], "PAYLOAD_TOO_LARGE");
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert_eq!(server.listed("").await.len(), 1);
}

async fn long_keys_and_headers_are_refused_cleanly(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let long_key = "k".repeat(70_000);
    let answer = send(
        server
            .authed(Method::POST, "/events")
            .header("X-Idempotency-Key", long_key)
            .json(&json!({ "payload": {} })),
    )
    .await;
    answer.expect(422);
    let long_api_key = send(
        server
            .request(Method::GET, "/inbox")
            .header("X-API-Key", "a".repeat(50_000)),
    )
    .await;
    long_api_key.expect(401);
    let long_topic = server
        .post(json!({ "topic": "t".repeat(10_000), "payload": {} }))
        .await;
    long_topic.expect(422);
    let long_filter = server
        .get(&format!("/inbox?topic={}", "t".repeat(20_000)))
        .await;
    long_filter.expect(200);
    // A header larger than the server reads is refused before any route.
    let huge_header = answer_to_huge_header(&server).await;
    assert!(huge_header.starts_with("HTTP/1.1 431"), "{huge_header}");
    assert!(server.listed("").await.is_empty(), "nothing was stored");
    send(server.request(Method::GET, "/health"))
        .await
        .expect(200);
}

/// The status line the server answers a 1 MiB header with. The server
/// answers and closes once it has read its limit, often while the rest is
/// still being written, so a failed write is expected and the answer read
/// from what arrived before the close.
async fn answer_to_huge_header(server: &Server) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = server
        .url
        .strip_prefix("http://")
        .expect("a plain HTTP URL");
    let mut conn = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!(
        "GET /inbox HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {}\r\nX-Padding: {}\r\n\r\n",
        server.key,
        "p".repeat(1 << 20)
    );
    let exchange = async {
        if let Err(e) = conn.write_all(request.as_bytes()).await {
            let cut_short = matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
            assert!(cut_short, "writing the request: {e}");
        }
        let (mut answer, mut chunk) = (Vec::new(), [0u8; 4096]);
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match conn.read(&mut chunk).await {
                Ok(0) => break,
                Ok(read) => answer.extend_from_slice(&chunk[..read]),
                Err(e) => panic!("reading the answer after {answer:?}: {e}"),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
}

async fn inbox_parameters_are_checked_as_zapstream_checks_them(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    server.post_n(1, "t").await;
    for limit in [
        "0",
        "-1",
        "501",
        "1e30",
        "abc",
        "1.5",
        "",
        "99999999999999999999",
    ] {
        let answer = server.get(&format!("/inbox?limit={limit}")).await;
        answer.expect(422);
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        assert_eq!(
            answer.body["error"]["validation_errors"][0]["field"], "query->limit",
            "{answer:?}"
        );
    }
    for good in [
        "limit=%2B5",
        "limit=500",
        "limit=1&limit=2",
        "since=0",
        "since=2020-01-01T00:00:00",
        "since=2020-01-01",
        "since=2020-01-01T01:00:00%2B01:00",
        "order=asc",
        "topic=&type=",
    ] {
        server.get(&format!("/inbox?{good}")).await.expect(200);
    }
    for since in ["", "garbage", "2020-13-45"] {
        let answer = server.get(&format!("/inbox?since={since}")).await;
        answer.expect(422);
        assert_eq!(
            answer.body["error"]["validation_errors"][0]["field"],
            "query->since"
        );
    }
    server.get("/inbox?order=sideways").await.expect(422);
    for cursor in [
        "garbage",
        "2026-11-23T05:14:27.241853%2B00:00|x",
        "AAAA",
        "%F0%9F%98%80",
    ] {
        let answer = server.get(&format!("/inbox?cursor={cursor}")).await;
        answer.expect(400);
        assert_eq!(answer.code(), "VALIDATION_ERROR");
    }
    // A cursor of another tenant's is no cursor here.
    send(
        server
            .other(Method::POST, "/events")
            .json(&json!({ "payload": {} })),
    )
    .await
    .expect(200);
    send(
        server
            .other(Method::POST, "/events")
            .json(&json!({ "payload": {} })),
    )
    .await
    .expect(200);
    let theirs = send(server.other(Method::GET, "/inbox?limit=1")).await;
    let cursor = theirs.body["next_cursor"].as_str().expect("a next page");
    let answer = server
        .get(&format!("/inbox?cursor={}", encode(cursor)))
        .await;
    answer.expect(400);
}

async fn pages_walk_newest_first_and_filters_combine(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let mut posted = Vec::new();
    for n in 0..7 {
        posted.push(
            server
                .post_n(n, if n % 2 == 0 { "even" } else { "odd" })
                .await,
        );
    }
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=3&cursor={}", encode(c)),
            None => "limit=3".into(),
        };
        let page = server.get(&format!("/inbox?{query}")).await;
        page.expect(200);
        walked.extend(support::ids(&page.body));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        // Posted after the walk began: newer, so never on a later page.
        if walked.len() == 3 {
            server.post_n(99, "even").await;
        }
    }
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();
    assert_eq!(walked, newest_first);
    assert_eq!(
        server.listed("order=asc&limit=3").await,
        posted[..3].to_vec()
    );
    let evens = server.listed("topic=even&type=count&order=asc").await;
    assert_eq!(evens.len(), 5);
    assert_eq!(
        evens[..4],
        [
            posted[0].clone(),
            posted[2].clone(),
            posted[4].clone(),
            posted[6].clone()
        ]
    );
    assert!(server.listed("topic=even&type=other").await.is_empty());
    assert!(
        server.listed("topic=EVEN").await.is_empty(),
        "exact and case-sensitive"
    );
    // `since` is inclusive. Times are kept to the millisecond, so events
    // posted within one share it, and all of them are at or after it.
    let page = server.get("/inbox?order=asc").await;
    let times: Vec<(String, String)> = page.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().expect("a string").to_owned();
            (field("id"), field("created_at"))
        })
        .collect();
    let third = times[2].1.clone();
    // One fixed-width format, so text order is time order.
    let at_or_after: Vec<String> = times
        .iter()
        .filter(|(_, at)| *at >= third)
        .map(|(id, _)| id.clone())
        .collect();
    let since = server
        .listed(&format!("order=asc&since={}", encode(&third)))
        .await;
    assert!(since.contains(&posted[2]), "inclusive");
    assert_eq!(since, at_or_after, "none earlier, no later one missing");
}

async fn ack_and_delete_settle_only_the_callers_events(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let a = server.post_n(1, "t").await;
    let b = server.post_n(2, "t").await;
    let ack = |id: &str| send(server.authed(Method::POST, &format!("/inbox/{id}/ack")));
    let delete = |id: &str| send(server.authed(Method::DELETE, &format!("/inbox/{id}")));

    // Another tenant can neither see nor touch them.
    for answer in [
        send(server.other(Method::POST, &format!("/inbox/{a}/ack"))).await,
        send(server.other(Method::DELETE, &format!("/inbox/{a}"))).await,
    ] {
        answer.expect(404);
        assert_eq!(answer.code(), "NOT_FOUND");
    }
    assert_eq!(server.listed("order=asc").await, [a.clone(), b.clone()]);

    let acked = ack(&a).await;
    acked.expect(200);
    assert_eq!(acked.body, json!({ "id": a, "status": "acknowledged" }));
    ack(&a).await.expect(200);
    assert_eq!(server.listed("").await, [b.as_str()]);
    let deleted = delete(&a).await;
    deleted.expect(200);
    assert_eq!(deleted.body, json!({ "id": a, "status": "deleted" }));
    delete(&b).await.expect(200);
    delete(&b).await.expect(404);
    ack(&b).await.expect(404);
    assert!(server.listed("").await.is_empty());
    for unknown in ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id", "%00", "%FF%FE"] {
        ack(unknown).await.expect(404);
        delete(unknown).await.expect(404);
    }
}

async fn credentials_are_required_and_checked(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let missing = send(server.request(Method::GET, "/inbox")).await;
    missing.expect(401);
    assert_eq!(missing.code(), "AUTHENTICATION_ERROR");
    assert_eq!(missing.body["error"]["message"], "API key required");
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let wrong = send(
        server
            .request(Method::GET, "/inbox")
            .header("X-API-Key", "nope"),
    )
    .await;
    wrong.expect(401);
    assert_eq!(wrong.body["error"]["message"], "Invalid API key");
    // Bearer wins over X-API-Key; other schemes are ignored; no query key.
    send(
        server
            .request(Method::GET, "/inbox")
            .bearer_auth(&server.key),
    )
    .await
    .expect(200);
    send(
        server
            .request(Method::GET, "/inbox")
            .header("authorization", format!("bearer {}", server.key)),
    )
    .await
    .expect(200);
    send(
        server
            .request(Method::GET, "/inbox")
            .bearer_auth("nope")
            .header("X-API-Key", &server.key),
    )
    .await
    .expect(401);
    send(
        server
            .request(Method::GET, "/inbox")
            .basic_auth("u", Some("p"))
            .header("X-API-Key", &server.key),
    )
    .await
    .expect(200);
    send(server.request(Method::GET, &format!("/inbox?api_key={}", server.key)))
        .await
        .expect(401);
    let post = send(
        server
            .request(Method::POST, "/events")
            .json(&json!({ "payload": {} })),
    )
    .await;
    post.expect(401);
    assert!(server.listed("").await.is_empty());
    // Health needs no key.
    send(server.request(Method::GET, "/health"))
        .await
        .expect(200);
}

async fn jwt_bearer_tokens_name_tenant_and_client(kind: Kind) {
    use jsonwebtoken::{EncodingKey, Header, encode as sign};
    let server = Server::start(kind, &[("JWT_SECRET", "s3cret")]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = |claims: Value, secret: &str| {
        sign(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("a token")
    };
    let good = token(
        json!({ "tenant_id": server.tenant, "client_id": "billing-svc", "exp": now + 600 }),
        "s3cret",
    );
    let created = send(
        server
            .request(Method::POST, "/events")
            .bearer_auth(&good)
            .json(&json!({ "topic": "jwt", "payload": {} })),
    )
    .await;
    created.expect(200);
    assert_eq!(
        server.listed("topic=jwt").await,
        [created.body["id"].as_str().expect("id")]
    );
    // The client is metered.
    let usage = send(server.request(Method::GET, "/usage").bearer_auth(&good)).await;
    usage.expect(200);
    let records = usage.body["records"].as_array().expect("records");
    assert!(
        records
            .iter()
            .any(|r| r["client_id"] == "billing-svc" && r["action"] == "ingest"),
        "{usage:?}"
    );
    for bad in [
        token(
            json!({ "tenant_id": server.tenant, "exp": now - 600 }),
            "s3cret",
        ),
        token(
            json!({ "tenant_id": server.tenant, "exp": now + 600 }),
            "wrong",
        ),
        token(json!({ "tenant_id": server.tenant }), "s3cret"),
        token(json!({ "exp": now + 600 }), "s3cret"),
        "a.b.c".to_owned(),
    ] {
        let answer = send(server.request(Method::GET, "/inbox").bearer_auth(&bad)).await;
        answer.expect(401);
        assert!(answer.header("www-authenticate").is_some());
    }
}

async fn the_rate_limit_answers_429_with_retry_after(kind: Kind) {
    let server = Server::start(kind, &[("RATE_LIMIT_PER_MINUTE", "5")]).await;
    // Refused credentials cost nothing.
    for _ in 0..3 {
        send(
            server
                .request(Method::GET, "/inbox")
                .header("X-API-Key", "nope"),
        )
        .await
        .expect(401);
    }
    for n in 0..5 {
        server.post_n(n, "t").await;
    }
    let limited = server.post(json!({ "payload": {} })).await;
    limited.expect(429);
    assert_eq!(limited.code(), "RATE_LIMIT_EXCEEDED");
    let after = limited.retry_after();
    assert!((1..=60).contains(&after), "{after}");
    server.get("/inbox").await.expect(429);
    // Other tenants and health are not limited.
    send(server.other(Method::GET, "/inbox")).await.expect(200);
    send(server.request(Method::GET, "/health"))
        .await
        .expect(200);
}

async fn the_daily_quota_answers_429_until_tomorrow(kind: Kind) {
    let server = Server::start(kind, &[("QUOTA_MESSAGES_IN_PER_DAY", "2")]).await;
    server.post_n(1, "t").await;
    server.post_n(2, "t").await;
    let refused = server.post(json!({ "payload": { "n": 3 } })).await;
    refused.expect(429);
    assert_eq!(refused.code(), "QUOTA_EXCEEDED");
    let after = refused.retry_after();
    assert!((1..=86_400).contains(&after), "{after}");
    assert!(refused.body["error"]["reset_at"].is_string());
    assert_eq!(server.listed("").await.len(), 2);
    send(
        server
            .other(Method::POST, "/events")
            .json(&json!({ "payload": {} })),
    )
    .await
    .expect(200);
}

async fn open_stream(server: &Server, query: &str, last_id: Option<&str>) -> Reader {
    let mut request = server.request(Method::GET, &format!("/inbox/stream?{query}"));
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("the stream opens");
    assert_eq!(response.status(), 200, "{response:?}");
    let kind = response.headers()["content-type"]
        .to_str()
        .expect("a type")
        .to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    Reader::new(response)
}

async fn the_stream_shows_new_events_and_resumes_after_the_last_id(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    let before = server.post_n(0, "t").await;
    let key = format!("api_key={}", server.key);
    let mut stream = open_stream(&server, &key, None).await;
    // ZapStream's shape: events from the connection on, with their state.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let first = server.post_n(1, "t").await;
    let frame = stream.next_event(SOON).await;
    let event = frame.json();
    assert_eq!(
        event["id"],
        first.as_str(),
        "the earlier {before} is not shown"
    );
    assert_eq!(
        (&event["status"], &event["delivered"]),
        (&json!("pending"), &json!(false))
    );
    assert_eq!(event["payload"], json!({ "n": 1 }));
    let first_id = frame.id.clone().expect("an id: line");
    // Heartbeats keep it open.
    let beat = stream
        .next(Duration::from_secs(5))
        .await
        .expect("a heartbeat");
    assert_eq!(beat.comment.as_deref(), Some("heartbeat"));
    drop(stream);

    // Missed while away, then shown on resuming: nothing twice.
    let second = server.post_n(2, "t").await;
    let third = server.post_n(3, "t").await;
    let mut resumed = open_stream(&server, &key, Some(&first_id)).await;
    assert_eq!(resumed.next_event(SOON).await.json()["id"], second.as_str());
    assert_eq!(resumed.next_event(SOON).await.json()["id"], third.as_str());
    resumed.no_event_within(Duration::from_millis(300)).await;
    drop(resumed);
    // `since` starts at the backlog; a bad Last-Event-ID is 400.
    let mut all = open_stream(&server, &format!("{key}&since=0&topic=t"), None).await;
    assert_eq!(all.next_event(SOON).await.json()["id"], before.as_str());
    drop(all);
    let bad = send(
        server
            .request(Method::GET, &format!("/inbox/stream?{key}"))
            .header("Last-Event-ID", "garbage"),
    )
    .await;
    bad.expect(400);
}

async fn the_stream_is_the_callers_alone(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    // ZapStream let anyone read any tenant's stream by naming it.
    let unauthenticated = send(server.request(
        Method::GET,
        &format!("/inbox/stream?tenant_id={}", server.tenant),
    ))
    .await;
    unauthenticated.expect(401);
    let bad_key = send(server.request(Method::GET, "/inbox/stream?api_key=nope")).await;
    bad_key.expect(401);
    assert!(bad_key.header("www-authenticate").is_some());
    // Nor can it resume from another tenant's cursor.
    send(
        server
            .other(Method::POST, "/events")
            .json(&json!({ "payload": {} })),
    )
    .await
    .expect(200);
    let theirs = format!("api_key={}&since=0", server.other_key);
    let mut their_stream = open_stream(&server, &theirs, None).await;
    let their_cursor = their_stream.next_event(SOON).await.id.expect("an id: line");
    drop(their_stream);
    let foreign_resume = send(
        server
            .request(
                Method::GET,
                &format!("/inbox/stream?api_key={}", server.key),
            )
            .header("Last-Event-ID", their_cursor),
    )
    .await;
    foreign_resume.expect(400);
    let foreign = send(server.request(
        Method::GET,
        &format!(
            "/inbox/stream?api_key={}&tenant_id={}",
            server.other_key, server.tenant
        ),
    ))
    .await;
    foreign.expect(403);
    // Each credential form works; the stream shows its tenant's events only.
    let mut by_query = open_stream(
        &server,
        &format!("api_key={}&tenant_id={}", server.key, server.tenant),
        None,
    )
    .await;
    let mut by_header = Reader::new(
        server
            .authed(Method::GET, "/inbox/stream?topic=mine")
            .send()
            .await
            .expect("a stream"),
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(
        server
            .other(Method::POST, "/events")
            .json(&json!({ "topic": "mine", "payload": { "theirs": true } })),
    )
    .await
    .expect(200);
    let mine = server.post_n(1, "mine").await;
    assert_eq!(by_query.next_event(SOON).await.json()["id"], mine.as_str());
    assert_eq!(by_header.next_event(SOON).await.json()["id"], mine.as_str());
    by_query.no_event_within(Duration::from_millis(300)).await;
}

async fn streams_are_limited_per_tenant(kind: Kind) {
    let server = Server::start(kind, &[("MAX_STREAMS_PER_TENANT", "1")]).await;
    let key = format!("api_key={}", server.key);
    let held = open_stream(&server, &key, None).await;
    let refused = send(server.request(Method::GET, &format!("/inbox/stream?{key}"))).await;
    refused.expect(429);
    assert_eq!(refused.code(), "TOO_MANY_STREAMS");
    assert!(refused.header("retry-after").is_some());
    drop(held);
    // Its place is freed once the server sees the stream close.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let again = server
            .request(Method::GET, &format!("/inbox/stream?{key}"))
            .send()
            .await
            .expect("answer");
        if again.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shutdown_finishes_requests_and_closes_streams(kind: Kind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start(kind, &[]).await;
    let mut stream = open_stream(&server, &format!("api_key={}", server.key), None).await;
    // A post in flight when shutdown begins: on a connection the server
    // has already answered once, its headers and half its body sent.
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    async fn answered(conn: &mut tokio::net::TcpStream) -> String {
        let (mut head, mut byte) = (Vec::new(), [0u8; 1]);
        while !head.ends_with(b"\r\n\r\n") {
            let read = conn.read(&mut byte).await.expect("read an answer");
            assert!(read == 1, "the connection closed before an answer");
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }
    conn.write_all(format!("GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let health = answered(&mut conn).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let length: usize = health
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())
        .expect("a content length");
    conn.read_exact(&mut vec![0; length])
        .await
        .expect("its body");
    let body = json!({ "payload": { "last": true } }).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    conn.write_all(
        format!(
            "POST /events HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
            server.key,
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    // Time for the server to read the headers and wait for the body.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(server.shut_down());
    // The stream ends (after any heartbeat in flight): shutdown has begun.
    let deadline = tokio::time::Instant::now() + SOON;
    while stream
        .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
        .is_some()
    {}
    conn.write_all(rest.as_bytes())
        .await
        .expect("write the rest");
    let posted = answered(&mut conn).await;
    assert!(posted.starts_with("HTTP/1.1 200"), "{posted}");
    stopped.await.expect("joined").expect("a clean shutdown");
}

async fn cors_allows_configured_origins_only(kind: Kind) {
    let server = Server::start(
        kind,
        &[(
            "CORS_ALLOWED_ORIGINS",
            "https://app.example,http://localhost:3000",
        )],
    )
    .await;
    let preflight = |origin: &str| {
        server
            .request(Method::OPTIONS, "/events")
            .header("Origin", origin.to_owned())
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key,content-type")
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("an answer");
    assert!(allowed.status().is_success());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .expect("text")
            .contains("x-api-key")
    );
    let refused = preflight("https://evil.example").await.expect("an answer");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let simple = server
        .authed(Method::GET, "/inbox")
        .header("Origin", "http://localhost:3000")
        .send()
        .await
        .expect("an answer");
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .expect("text")
        .to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

async fn usage_reports_billable_totals(kind: Kind) {
    let server = Server::start(kind, &[]).await;
    server
        .post(json!({ "topic": "u", "payload": { "n": 1 } }))
        .await
        .expect(200);
    server
        .post(json!({ "topic": "u", "payload": { "n": 22 } }))
        .await
        .expect(200);
    assert_eq!(server.listed("").await.len(), 2);
    let usage = server.get("/usage").await;
    usage.expect(200);
    assert_eq!(usage.body["tenant"], server.tenant.as_str());
    assert_eq!(usage.body["totals"]["ingest"]["events"], 2, "{usage:?}");
    assert_eq!(usage.body["totals"]["ingest"]["bytes"], 15, "{usage:?}");
    assert_eq!(usage.body["totals"]["deliver"]["events"], 2, "{usage:?}");
    let theirs = send(server.other(Method::GET, "/usage")).await;
    assert!(
        theirs.body["records"]
            .as_array()
            .expect("records")
            .is_empty(),
        "{theirs:?}"
    );
    let today = &usage.body["from"];
    let ranged = server
        .get(&format!(
            "/usage?from=2020-01-01&to={}",
            today.as_str().expect("a date")
        ))
        .await;
    ranged.expect(422);
    for bad in [
        "from=yesterday",
        "from=2026-02-30",
        "from=2026-01-02&to=2026-01-01",
    ] {
        server.get(&format!("/usage?{bad}")).await.expect(422);
    }
}

async fn metrics_openapi_and_unknown_routes_answer(kind: Kind) {
    let server = Server::start(kind, &[("METRICS_TOKEN", "scrape")]).await;
    server.get("/inbox").await.expect(200);
    send(server.request(Method::GET, "/metrics"))
        .await
        .expect(401);
    let metrics = server
        .request(Method::GET, "/metrics")
        .bearer_auth("scrape")
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("zapinbox_http_requests_total"), "{text}");
    let openapi = send(server.request(Method::GET, "/openapi.json")).await;
    openapi.expect(200);
    assert_eq!(openapi.body["openapi"], "3.1.0");
    // Every route is described, and nothing else.
    let mut described: Vec<&str> = openapi.body["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    described.sort_unstable();
    let routes = [
        "/",
        "/dashboard/{file}",
        "/events",
        "/health",
        "/health/detailed",
        "/inbox",
        "/inbox/stream",
        "/inbox/{id}",
        "/inbox/{id}/ack",
        "/metrics",
        "/openapi.json",
        "/stats",
        "/usage",
    ];
    assert_eq!(described, routes);
    let unknown = send(server.request(Method::GET, "/nowhere")).await;
    unknown.expect(404);
    // A client's own request id is echoed when it is short and visible.
    let traced = send(
        server
            .request(Method::GET, "/nowhere")
            .header("X-Request-ID", "trace-42"),
    )
    .await;
    assert_eq!(traced.header("x-request-id"), Some("trace-42"));
    assert_eq!(traced.body["error"]["requestId"], "trace-42");
    let long = "t".repeat(500);
    let replaced = send(
        server
            .request(Method::GET, "/health")
            .header("X-Request-ID", long.as_str()),
    )
    .await;
    assert_ne!(replaced.header("x-request-id"), Some(long.as_str()));
    send(server.request(Method::PUT, "/events"))
        .await
        .expect(405);
    let page = server
        .request(Method::GET, "/")
        .header("Accept", "text/html")
        .send()
        .await
        .expect("page");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("<title>zapinbox</title>")
    );
    let index = send(server.request(Method::GET, "/")).await;
    assert_eq!(index.body["inbox"], "/inbox");
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
