//! The table: making it (for development), and the calls every operation
//! makes on it, each counting the capacity it consumed.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, Get, KeySchemaElement, KeyType, LocalSecondaryIndex,
    Projection, ProjectionType, Put, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, Select, TableDescription,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus, TransactGetItem, TransactWriteItem,
    Update,
};
use futures::Stream;
use zapinbox_core::{Error, Result};

use crate::capacity::CapacityLog;
use crate::error::{classify, waiting_out};
use crate::item::{DEAD, DELIVERY_ATTRIBUTES, Item, LAST_LEASE, PENDING, PK, READY, SK, TTL, s};

/// The table and the client that reaches it.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub client: Client,
    pub name: String,
    pub capacity: CapacityLog,
}

/// The name of the local secondary index whose sort key is `attribute`
/// (index names take at least three characters).
fn index_name(attribute: &str) -> String {
    format!("{attribute}_index")
}

/// Which sort keys a query reads.
#[derive(Clone, Debug)]
pub(crate) enum Range {
    All,
    /// Strictly greater than this.
    Above(String),
    /// Strictly less than this.
    Below(String),
    /// Starting with this.
    Prefix(&'static str),
    /// From the first to the second, both included.
    Between(String, String),
}

/// A query of one partition: which sort keys, which way, how many.
#[derive(Clone)]
pub(crate) struct Query<'a> {
    /// A local secondary index (its sort key has the index's name), or the
    /// table itself.
    pub index: Option<&'static str>,
    pub pk: &'a str,
    pub range: Range,
    pub ascending: bool,
    pub limit: i32,
    pub start: Option<Item>,
    /// Only these attributes (all when empty).
    pub attributes: &'a [&'static str],
    /// From an index: whole items, payloads too, which the indexes do not
    /// copy (DynamoDB reads them from the table, consistently).
    pub whole: bool,
}

impl<'a> Query<'a> {
    pub(crate) fn new(index: Option<&'static str>, pk: &'a str, range: Range) -> Self {
        Query {
            index,
            pk,
            range,
            ascending: true,
            limit: 100,
            start: None,
            attributes: &[],
            whole: false,
        }
    }
}

/// One page of a query: the items and where the next page starts.
pub(crate) struct QueryPage {
    pub items: Vec<Item>,
    pub next: Option<Item>,
}

impl Table {
    /// Reads one item, strongly consistent.
    pub(crate) async fn get(&self, op: &'static str, key: Item) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.capacity.read(op, out.consumed_capacity());
        Ok(out.item)
    }

    /// Reads one item as of a moment no transaction is halfway through:
    /// `TransactGetItems` is serialisable with `TransactWriteItems`, where
    /// a plain read (and a query) may see some of a transaction's items
    /// and not yet others. A transaction in progress on it is waited out.
    pub(crate) async fn get_whole(&self, op: &'static str, key: Item) -> Result<Option<Item>> {
        let get = Get::builder()
            .table_name(&self.name)
            .set_key(Some(key))
            .build()
            .map_err(Error::permanent)?;
        let sent = waiting_out("TransactionCanceledException", || {
            self.client
                .transact_get_items()
                .transact_items(TransactGetItem::builder().get(get.clone()).build())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
        })
        .await
        .map_err(classify)?;
        self.capacity.read(op, sent.consumed_capacity());
        let mut responses = sent.responses.unwrap_or_default();
        Ok(responses.pop().and_then(|r| r.item))
    }

    /// One page of a strongly consistent query (local secondary indexes
    /// allow it; global ones would not).
    pub(crate) async fn query(&self, op: &'static str, q: Query<'_>) -> Result<QueryPage> {
        let sort = q.index.unwrap_or(SK);
        let mut condition = format!("{PK} = :pk");
        let mut call = self
            .client
            .query()
            .table_name(&self.name)
            .set_index_name(q.index.map(index_name))
            .consistent_read(true)
            .scan_index_forward(q.ascending)
            .limit(q.limit.max(1))
            .set_exclusive_start_key(q.start)
            .expression_attribute_values(":pk", s(q.pk))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        let test = match q.range {
            Range::All => None,
            Range::Above(v) => Some((" AND #s > :v", v)),
            Range::Below(v) => Some((" AND #s < :v", v)),
            Range::Prefix(v) => Some((" AND begins_with(#s, :v)", v.to_owned())),
            Range::Between(from, to) => {
                call = call.expression_attribute_values(":to", s(to));
                Some((" AND #s BETWEEN :v AND :to", from))
            }
        };
        if let Some((test, value)) = test {
            condition.push_str(test);
            call = call
                .expression_attribute_names("#s", sort)
                .expression_attribute_values(":v", s(value));
        }
        if q.whole && q.index.is_some() {
            call = call.select(Select::AllAttributes);
        }
        if !q.attributes.is_empty() {
            let mut listed = Vec::new();
            for (i, name) in q.attributes.iter().enumerate() {
                listed.push(format!("#a{i}"));
                call = call.expression_attribute_names(format!("#a{i}"), *name);
            }
            call = call.projection_expression(listed.join(", "));
        }
        let out = call
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(classify)?;
        self.capacity.read(op, out.consumed_capacity());
        Ok(QueryPage {
            items: out.items.unwrap_or_default(),
            next: out.last_evaluated_key,
        })
    }

    /// Every page of `q`, one after another: each starts where DynamoDB
    /// stopped reading the one before.
    pub(crate) fn pages<'a>(
        &'a self,
        op: &'static str,
        q: Query<'a>,
    ) -> impl Stream<Item = Result<Vec<Item>>> + 'a {
        futures::stream::try_unfold(Some(q), move |q| async move {
            let Some(q) = q else {
                return Ok(None);
            };
            let rest = q.clone();
            let page = self.query(op, q).await?;
            let rest = page.next.map(|start| Query {
                start: Some(start),
                ..rest
            });
            Ok(Some((page.items, rest)))
        })
    }

    /// Makes the table, its indexes and its time to live if they are
    /// missing, and waits until it is active. For development and tests:
    /// in production, make the table with your infrastructure tooling (the
    /// crate docs give its shape).
    pub(crate) async fn ensure(&self) -> Result<()> {
        if !self.exists().await? {
            self.create().await?;
        }
        self.wait_active().await?;
        self.ensure_ttl().await
    }

    /// The table as DynamoDB describes it, if it exists.
    async fn describe(&self) -> Result<Option<TableDescription>> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await;
        match described {
            Ok(out) => Ok(out.table),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn exists(&self) -> Result<bool> {
        let Some(table) = self.describe().await? else {
            return Ok(false);
        };
        // A table of another shape would fail later, call by call.
        let indexes = table.local_secondary_indexes();
        for attribute in [PENDING, READY, DEAD, LAST_LEASE] {
            let name = index_name(attribute);
            if !indexes
                .iter()
                .any(|i| i.index_name() == Some(name.as_str()))
            {
                return Err(Error::invalid(format!(
                    "table {} exists without the local secondary index {name}: \
                     it was made for something else, or by an older version",
                    self.name
                )));
            }
        }
        Ok(true)
    }

    async fn create(&self) -> Result<()> {
        let string = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(Error::permanent)
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(Error::permanent)
        };
        let delivery = Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(
                DELIVERY_ATTRIBUTES.iter().map(|a| a.to_string()).collect(),
            ))
            .build();
        let mut call = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .attribute_definitions(string(PK)?)
            .attribute_definitions(string(SK)?);
        // No index copies the payload: an item and its index entries
        // together must fit in 400 KB.
        for index in [PENDING, READY, DEAD, LAST_LEASE] {
            let lsi = LocalSecondaryIndex::builder()
                .index_name(index_name(index))
                .key_schema(key(PK, KeyType::Hash)?)
                .key_schema(key(index, KeyType::Range)?)
                .projection(delivery.clone())
                .build()
                .map_err(Error::permanent)?;
            call = call
                .attribute_definitions(string(index)?)
                .local_secondary_indexes(lsi);
        }
        match call.send().await {
            Ok(_) => Ok(()),
            // Another process made it meanwhile.
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn wait_active(&self) -> Result<()> {
        for _ in 0..600 {
            let table = self.describe().await?;
            if table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::transient(format!(
            "table {} is still not active after a minute",
            self.name
        )))
    }

    async fn ensure_ttl(&self) -> Result<()> {
        let described = self
            .client
            .describe_time_to_live()
            .table_name(&self.name)
            .send()
            .await
            .map_err(classify)?;
        let status = described
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(TTL)
            .enabled(true)
            .build()
            .map_err(Error::permanent)?;
        let updated = self
            .client
            .update_time_to_live()
            .table_name(&self.name)
            .time_to_live_specification(spec)
            .send()
            .await;
        match updated {
            Ok(_) => Ok(()),
            // Enabled by another process since we looked.
            Err(e)
                if e.code() == Some("ValidationException")
                    && e.message().is_some_and(|m| m.contains("already enabled")) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }
}

/// One conditional write, alone or as an action of a transaction.
#[derive(Clone, Debug)]
pub(crate) enum Write {
    Put {
        item: Item,
        condition: Option<String>,
        values: Item,
        /// On a failed condition, hand back the item that was there.
        want_old: bool,
    },
    Update(Change),
}

/// An update of one item's attributes, conditional or not.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub key: Item,
    pub expression: String,
    pub condition: Option<String>,
    pub names: HashMap<String, String>,
    pub values: Item,
}

/// Why a transaction was cancelled, action by action.
#[derive(Debug)]
pub(crate) struct Cancelled {
    /// Each action's reason code (`None` when it was not the cause) and,
    /// for a failed condition that asked for it, the item there.
    pub reasons: Vec<(Option<String>, Option<Item>)>,
}

/// What a conditional write found.
pub(crate) enum Written {
    /// Done; the item as it is now, when asked for.
    Done(Option<Item>),
    /// The condition did not hold: nothing changed.
    ConditionFailed,
}

fn none_if_empty(map: Item) -> Option<Item> {
    (!map.is_empty()).then_some(map)
}

fn names_if_any(map: HashMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

impl Write {
    fn into_action(self, table: &str) -> Result<TransactWriteItem> {
        let action = match self {
            Write::Put {
                item,
                condition,
                values,
                want_old,
            } => {
                let old = if want_old {
                    ReturnValuesOnConditionCheckFailure::AllOld
                } else {
                    ReturnValuesOnConditionCheckFailure::None
                };
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .set_condition_expression(condition)
                    .set_expression_attribute_values(none_if_empty(values))
                    .return_values_on_condition_check_failure(old)
                    .build()
                    .map_err(Error::permanent)?;
                TransactWriteItem::builder().put(put).build()
            }
            Write::Update(change) => {
                let update = Update::builder()
                    .table_name(table)
                    .set_key(Some(change.key))
                    .update_expression(change.expression)
                    .set_condition_expression(change.condition)
                    .set_expression_attribute_names(names_if_any(change.names))
                    .set_expression_attribute_values(none_if_empty(change.values))
                    .build()
                    .map_err(Error::permanent)?;
                TransactWriteItem::builder().update(update).build()
            }
        };
        Ok(action)
    }
}

impl Table {
    /// Writes all of `writes` or none: `Err(Cancelled)` says why not.
    pub(crate) async fn transact(
        &self,
        op: &'static str,
        writes: Vec<Write>,
    ) -> Result<std::result::Result<(), Cancelled>> {
        let actions = writes
            .into_iter()
            .map(|w| w.into_action(&self.name))
            .collect::<Result<Vec<_>>>()?;
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match sent {
            Ok(out) => {
                self.capacity.write(op, out.consumed_capacity());
                Ok(Ok(()))
            }
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    let reasons = c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| (r.code().map(str::to_owned), r.item().cloned()))
                        .collect();
                    Ok(Err(Cancelled { reasons }))
                }
                _ => Err(classify(e)),
            },
        }
    }

    /// One conditional update, giving back the item as it is after it
    /// when `new` asks. A transaction in progress on the item
    /// (`TransactionConflictException`, which the SDK does not retry) is
    /// waited out, a few times, with backoff.
    pub(crate) async fn update(
        &self,
        op: &'static str,
        change: Change,
        new: bool,
    ) -> Result<Written> {
        let returned = if new {
            ReturnValue::AllNew
        } else {
            ReturnValue::None
        };
        let sent = waiting_out("TransactionConflictException", || {
            self.client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(change.key.clone()))
                .update_expression(&change.expression)
                .set_condition_expression(change.condition.clone())
                .set_expression_attribute_names(names_if_any(change.names.clone()))
                .set_expression_attribute_values(none_if_empty(change.values.clone()))
                .return_values(returned.clone())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
        })
        .await;
        match sent {
            Ok(out) => {
                self.capacity.write(op, out.consumed_capacity());
                Ok(Written::Done(out.attributes))
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Ok(Written::ConditionFailed)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Deletes one item if `condition` holds, giving back what it was.
    pub(crate) async fn delete(
        &self,
        op: &'static str,
        key: Item,
        condition: &str,
        values: Item,
    ) -> Result<Option<Item>> {
        let sent = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .condition_expression(condition)
            .set_expression_attribute_values(none_if_empty(values))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match sent {
            Ok(out) => {
                self.capacity.write(op, out.consumed_capacity());
                Ok(out.attributes)
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }
}
