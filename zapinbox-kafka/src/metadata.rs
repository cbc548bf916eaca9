//! What the brokers say about a topic: its partitions and where each
//! begins and ends.

use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use zapinbox_core::Result;

use crate::backend::classify;
use crate::log::At;

/// How many partitions `topic` has; `None` if it does not exist.
pub(crate) fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> Result<Option<usize>> {
    let metadata = fetch(client, Some(topic))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

/// The brokers' metadata of `topic`, or of every topic: asked again
/// while no broker answers (a busy or restarting broker), for up to 10 s.
pub(crate) fn fetch<C: ClientContext>(client: &Client<C>, topic: Option<&str>) -> Result<Metadata> {
    use rdkafka::types::RDKafkaErrorCode::{
        AllBrokersDown, BrokerTransportFailure, OperationTimedOut,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.fetch_metadata(topic, Duration::from_secs(10)) {
            Ok(metadata) => return Ok(metadata),
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(AllBrokersDown | BrokerTransportFailure | OperationTimedOut)
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(classify(e)),
        }
    }
}

/// The low and high watermarks of each log in `logs`, asked for several
/// at a time (one round trip each).
pub(crate) fn watermarks(consumer: &BaseConsumer, logs: &[At]) -> Result<Vec<(i64, i64)>> {
    let timeout = Duration::from_secs(10);
    let ask = |at: &At| {
        consumer
            .fetch_watermarks(&at.topic, at.partition, timeout)
            .map_err(classify)
    };
    in_parallel(logs.iter().collect(), ask)
        .into_iter()
        .collect()
}

/// `f` of each item, on a few threads, in order.
pub(crate) fn in_parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let per_thread = items.len().div_ceil(threads).max(1);
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        groups.push(items.by_ref().take(per_thread).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = groups
            .into_iter()
            .map(|group| scope.spawn(move || group.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_parallel_keeps_the_order() {
        let items: Vec<usize> = (0..37).collect();
        assert_eq!(
            in_parallel(items.clone(), |i| i * 2),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        assert!(in_parallel(Vec::<usize>::new(), |i| i).is_empty());
    }
}
