//! Opaque pull cursors, checked for corruption and scope.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Order, Result, TenantId};

/// A position in a backend's commit order for one tenant (SQLite: the row
/// sequence; Kafka: the offset). Not an event id: ids from two writers can
/// commit out of order.
pub type Position = u64;

const VERSION: u8 = 1;
const LEN: usize = 1 + 1 + 8 + 8 + 4;

/// Where a page ended. Opaque: pass it back unchanged to get the next page.
///
/// A cursor is bound to its tenant, backend and order and carries a check
/// sum: a garbled, truncated or foreign cursor is [`Error::InvalidInput`].
/// It is not a secret and not signed: a client could build a cursor for any
/// position of its own tenant, which reveals nothing, because every query
/// is scoped to the caller's tenant.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a cursor string as received from a client.
    pub fn from_string(s: impl Into<String>) -> Self {
        Cursor(s.into())
    }

    /// The cursor as a URL-safe string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Encodes `position` for `tenant` on the backend named `backend`.
    pub fn encode(tenant: &TenantId, backend: &str, order: Order, position: Position) -> Self {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(VERSION);
        bytes.push(order_byte(order));
        bytes.extend_from_slice(&position.to_be_bytes());
        bytes.extend_from_slice(&scope_tag(tenant, backend));
        let check = checksum(&bytes);
        bytes.extend_from_slice(&check);
        Cursor(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Decodes the position, checking that the cursor is whole and was made
    /// for this tenant, backend and order.
    pub fn decode(&self, tenant: &TenantId, backend: &str, order: Order) -> Result<Position> {
        let shown: String = self.0.chars().take(48).collect();
        let invalid = |why: &str| Error::invalid(format!("cursor {shown:?} {why}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.0)
            .map_err(|_| invalid("is not a cursor this inbox made"))?;
        if bytes.len() != LEN || bytes[0] != VERSION {
            return Err(invalid("is not a cursor this inbox made"));
        }
        let (body, check) = bytes.split_at(LEN - 4);
        if checksum(body) != check {
            return Err(invalid("was altered"));
        }
        if body[10..18] != scope_tag(tenant, backend) {
            return Err(invalid("belongs to another tenant or backend"));
        }
        if body[1] != order_byte(order) {
            return Err(invalid("was made for the other order"));
        }
        let mut pos = [0u8; 8];
        pos.copy_from_slice(&body[2..10]);
        Ok(Position::from_be_bytes(pos))
    }
}

fn order_byte(order: Order) -> u8 {
    match order {
        Order::Asc => 0,
        Order::Desc => 1,
    }
}

fn scope_tag(tenant: &TenantId, backend: &str) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(backend.as_bytes())
        .chain_update([0])
        .chain_update(tenant.as_str().as_bytes())
        .finalize();
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(body);
    [digest[0], digest[1], digest[2], digest[3]]
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

impl std::str::FromStr for Cursor {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Cursor(s.to_owned()))
    }
}
