//! An instance killed with SIGKILL mid-ingest and restarted rebuilds the
//! same inbox as an instance that stayed up: nothing acknowledged to a
//! caller is lost, nothing acked reappears. The brokers (librdkafka's mock
//! cluster) live in this test's process; the killed instance is a child
//! process talking to them over TCP on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use zapinbox_core::testkit::process::{child_process, report_lines, run_until_killed};
use zapinbox_core::{
    Event, EventId, EventStatus, Inbox, NewEvent, PullQuery, QueueConfig, TenantId,
};
use zapinbox_kafka::{KafkaBackend, KafkaConfig, MockBroker};

const BROKERS_ENV: &str = "ZAPINBOX_KAFKA_CRASH_BROKERS";
const TOPIC_ENV: &str = "ZAPINBOX_KAFKA_CRASH_TOPIC";
const TASKS: usize = 8;

fn tenant() -> TenantId {
    TenantId::new("crash").expect("valid")
}

async fn open(brokers: &str, topic: &str) -> Inbox {
    // The mock cluster answers fetches only when their wait is over.
    let kafka = KafkaConfig::new(brokers)
        .topic(topic)
        .fetch_wait(Duration::from_millis(5));
    let backend = KafkaBackend::open(kafka, QueueConfig::default())
        .await
        .expect("open");
    Inbox::new(backend)
}

/// The child's side: runs only when the parent starts this binary with
/// the brokers in the environment. Ingests from several tasks and acks
/// every other event until it is killed, printing `STORED <id>` once an
/// ingest returned and `ACKED <id>` once an ack did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the other process's side: started by the test below with --ignored"]
async fn child_process_entry_point() {
    let (Ok(brokers), Ok(topic)) = (std::env::var(BROKERS_ENV), std::env::var(TOPIC_ENV)) else {
        return;
    };
    let inbox = open(&brokers, &topic).await;
    let report = report_lines();
    let _ = report.send("READY".into());
    let run: u32 = rand::random();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (inbox, report) = (inbox.clone(), report.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let event = NewEvent::new(json!({ "task": task, "n": n }))
                        .with_idempotency_key(format!("{run}-{task}-{n}"));
                    let id = inbox.ingest(&tenant(), event).await.expect("ingest").id;
                    let _ = report.send(format!("STORED {id}"));
                    if n % 2 == 0 {
                        inbox.ack(&tenant(), id).await.expect("ack");
                        let _ = report.send(format!("ACKED {id}"));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// Starts the child, lets it run `after` past its first line, kills it;
/// the ids it reported stored and acked.
fn run_and_kill(brokers: &str, topic: &str, after: Duration) -> (Vec<EventId>, Vec<EventId>) {
    let mut command = child_process();
    command.env(BROKERS_ENV, brokers).env(TOPIC_ENV, topic);
    let lines = run_until_killed(command, after);
    let ids = |prefix: &str| -> Vec<EventId> {
        let ids = lines.iter().filter_map(|l| l.strip_prefix(prefix));
        ids.map(|id| id.parse().expect("an id")).collect()
    };
    (ids("STORED "), ids("ACKED "))
}

/// Every event of the tenant, pending or not, as `inbox` has it: the
/// pending ones by pulling, then each reported id by `get`.
async fn state(inbox: &Inbox, ids: &[EventId]) -> (Vec<Event>, Vec<Option<Event>>) {
    let mut pending = Vec::new();
    let mut query = PullQuery::new().limit(1000);
    loop {
        let page = inbox.pull(&tenant(), query.clone()).await.expect("pull");
        pending.extend(page.events);
        match page.next_cursor {
            Some(cursor) if page.has_more => query = query.after(cursor),
            _ => break,
        }
    }
    let mut each = Vec::with_capacity(ids.len());
    for id in ids {
        each.push(inbox.get(&tenant(), *id).await.expect("get"));
    }
    (pending, each)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_rebuilds_the_same_state_and_loses_nothing() {
    let broker = MockBroker::start().expect("the in-process mock Kafka cluster starts");
    let topic = "crash";
    broker.create_topic(topic, 4).expect("create the topic");
    let brokers = broker.brokers().to_owned();
    let survivor = open(&brokers, topic).await;
    let mut stored = Vec::new();
    let mut acked = HashSet::new();
    for cycle in 0..3 {
        let after = Duration::from_millis(200 + rand::random::<u64>() % 500);
        let (s, a) = tokio::task::spawn_blocking({
            let brokers = brokers.clone();
            move || run_and_kill(&brokers, topic, after)
        })
        .await
        .expect("join");
        assert!(!s.is_empty(), "cycle {cycle}: the child stored something");
        stored.extend(s);
        acked.extend(a);
        eprintln!(
            "cycle {cycle}: {} stored, {} acked so far",
            stored.len(),
            acked.len()
        );

        let restarted = open(&brokers, topic).await;
        let rebuilt = state(&restarted, &stored).await;
        for (id, event) in stored.iter().zip(&rebuilt.1) {
            let event = event.as_ref().unwrap_or_else(|| panic!("{id} was lost"));
            if acked.contains(id) {
                assert_eq!(event.status, EventStatus::Acked, "{id} came back");
            }
            let payload = event.payload.as_value().expect("the content is whole");
            assert!(payload.get("task").is_some(), "{id}: {payload}");
        }
        // The survivor follows the log live: give it a moment to reach
        // what the restarted instance replayed.
        let mut same = false;
        for _ in 0..200 {
            if state(&survivor, &stored).await == rebuilt {
                same = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            same,
            "cycle {cycle}: the survivor and the restarted instance differ"
        );
    }
}
