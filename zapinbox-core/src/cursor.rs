//! Opaque pull cursors: a backend-defined position, checked for corruption
//! and scope.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Order, Result, TenantId};

/// Longest [`Position`], in bytes.
pub const MAX_POSITION_BYTES: usize = 1024;

/// Positions up to this long are kept without a heap allocation (a
/// listing makes one per row).
const INLINE: usize = 23;

/// A place in a backend's commit order for one tenant, as bytes the backend
/// defines: the SQLite row sequence, a Kafka partition offset (or one per
/// partition of a layout), a DynamoDB key. Not an event id: ids from two
/// writers can commit out of order.
///
/// Backends that count one sequence use [`Position::sequence`]; those that
/// need several numbers, [`Position::from_parts`]; anything else,
/// [`Position::from_bytes`].
#[derive(Clone)]
pub struct Position(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Position {
    /// A position of one sequence number (8 bytes, big-endian).
    pub fn sequence(n: u64) -> Self {
        Self::inline(&n.to_be_bytes())
    }

    /// A position of several numbers, say one offset per partition (8
    /// bytes each, big-endian); at most 128 of them.
    pub fn from_parts(parts: &[u64]) -> Result<Self> {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.to_be_bytes()).collect();
        Self::from_bytes(&bytes)
    }

    /// A position of any bytes, at most [`MAX_POSITION_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_POSITION_BYTES {
            return Err(Error::invalid(format!(
                "a position is at most {MAX_POSITION_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(if bytes.len() <= INLINE {
            Self::inline(bytes)
        } else {
            Position(Repr::Heap(bytes.into()))
        })
    }

    fn inline(src: &[u8]) -> Self {
        let mut bytes = [0u8; INLINE];
        bytes[..src.len()].copy_from_slice(src);
        Position(Repr::Inline {
            len: src.len() as u8,
            bytes,
        })
    }

    /// The position's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(bytes) => bytes,
        }
    }

    /// The sequence number of a position made by [`Position::sequence`];
    /// `InvalidInput` for any other shape (a cursor a client built).
    pub fn as_sequence(&self) -> Result<u64> {
        let bytes: [u8; 8] = self
            .as_bytes()
            .try_into()
            .map_err(|_| Error::invalid("the cursor's position is not one this backend makes"))?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// The numbers of a position made by [`Position::from_parts`];
    /// `InvalidInput` if its length is not a multiple of 8.
    pub fn parts(&self) -> Result<Vec<u64>> {
        let bytes = self.as_bytes();
        if !bytes.len().is_multiple_of(8) {
            return Err(Error::invalid(
                "the cursor's position is not one this backend makes",
            ));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut n = [0u8; 8];
                n.copy_from_slice(c);
                u64::from_be_bytes(n)
            })
            .collect())
    }
}

impl PartialEq for Position {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Position {}

impl std::hash::Hash for Position {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What a cursor holds, read with [`Cursor::parts`]: enough to reissue it
/// for another backend that keeps the same commit order (moving an inbox).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CursorParts {
    /// The name of the backend that made it.
    pub backend: String,
    /// The order it pages in.
    pub order: Order,
    /// Where it resumes.
    pub position: Position,
}

/// The current cursor format; see [`Cursor`] for version 1.
const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const CHECK: usize = 4;
const TAG: usize = 8;

/// Where a page ended. Opaque: pass it back unchanged to get the next page.
///
/// A cursor is bound to its tenant, backend and order and carries a check
/// sum: a garbled, truncated or foreign cursor is [`Error::InvalidInput`].
/// It is not a secret and not signed: a client could build a cursor for any
/// position of its own tenant, which reveals nothing, because every query
/// is scoped to the caller's tenant.
///
/// Format 2 (today's) carries the backend's name in the clear beside the
/// position, so a tool moving an inbox between backends can read it
/// ([`Cursor::parts`]) and reissue it. Format-1 cursors (one 64-bit
/// position, made before 0.2) still decode, on the backend that made them.
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

    /// Encodes `position` for `tenant` on the backend named `backend`
    /// (at most 255 bytes of name).
    pub fn encode(tenant: &TenantId, backend: &str, order: Order, position: &Position) -> Self {
        debug_assert!(backend.len() <= 255, "backend names are at most 255 bytes");
        let name = &backend.as_bytes()[..backend.len().min(255)];
        let pos = position.as_bytes();
        let mut bytes = Vec::with_capacity(2 + TAG + 1 + name.len() + 2 + pos.len() + CHECK);
        bytes.push(VERSION);
        bytes.push(order_byte(order));
        bytes.extend_from_slice(&tenant_tag(tenant));
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        // A position is at most MAX_POSITION_BYTES, which fits in u16.
        bytes.extend_from_slice(&(pos.len() as u16).to_be_bytes());
        bytes.extend_from_slice(pos);
        let check = checksum(&bytes);
        bytes.extend_from_slice(&check);
        Cursor(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Decodes the position, checking that the cursor is whole and was made
    /// for this tenant, backend and order.
    pub fn decode(&self, tenant: &TenantId, backend: &str, order: Order) -> Result<Position> {
        let parts = self
            .parts(tenant)
            .or_else(|e| self.decode_v1(tenant, backend).ok_or(e))?;
        if parts.backend != backend {
            return Err(self.invalid(&format!("was made by the {} backend", parts.backend)));
        }
        if parts.order != order {
            return Err(self.invalid("was made for the other order"));
        }
        Ok(parts.position)
    }

    /// What the cursor holds, checking that it is whole and was made for
    /// `tenant`.
    pub fn parts(&self, tenant: &TenantId) -> Result<CursorParts> {
        let foreign = || self.invalid("is not a cursor this inbox made");
        let bytes = URL_SAFE_NO_PAD.decode(&self.0).map_err(|_| foreign())?;
        if bytes.len() < 2 + TAG + 1 + 2 + CHECK || bytes[0] != VERSION {
            return Err(foreign());
        }
        let (body, check) = bytes.split_at(bytes.len() - CHECK);
        if checksum(body) != check {
            return Err(self.invalid("was altered"));
        }
        let mut rest = Reader(body);
        let _version = rest.take(1);
        let order = match rest.take(1).and_then(|b| order_from(b[0])) {
            Some(order) => order,
            None => return Err(foreign()),
        };
        if rest.take(TAG) != Some(&tenant_tag(tenant)[..]) {
            return Err(self.invalid("belongs to another tenant"));
        }
        let name_len = rest.take(1).map(|b| usize::from(b[0]));
        let name = name_len.and_then(|n| rest.take(n));
        let backend = name.and_then(|n| std::str::from_utf8(n).ok());
        let pos_len = rest
            .take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let position = pos_len.and_then(|n| rest.take(n));
        match (backend, position) {
            (Some(backend), Some(position)) if rest.0.is_empty() => Ok(CursorParts {
                backend: backend.to_owned(),
                order,
                position: Position::from_bytes(position).map_err(|_| foreign())?,
            }),
            _ => Err(foreign()),
        }
    }

    /// A format-1 cursor (version, order, 8-byte position, a tag of backend
    /// and tenant, check sum) made by `backend` for `tenant`, if it is one.
    fn decode_v1(&self, tenant: &TenantId, backend: &str) -> Option<CursorParts> {
        let bytes = URL_SAFE_NO_PAD.decode(&self.0).ok()?;
        if bytes.len() != 1 + 1 + 8 + TAG + CHECK || bytes[0] != VERSION_1 {
            return None;
        }
        let (body, check) = bytes.split_at(bytes.len() - CHECK);
        if checksum(body) != check || body[10..18] != v1_scope_tag(tenant, backend) {
            return None;
        }
        let mut pos = [0u8; 8];
        pos.copy_from_slice(&body[2..10]);
        Some(CursorParts {
            backend: backend.to_owned(),
            order: order_from(body[1])?,
            position: Position::sequence(u64::from_be_bytes(pos)),
        })
    }

    fn invalid(&self, why: &str) -> Error {
        let shown: String = self.0.chars().take(48).collect();
        Error::invalid(format!("cursor {shown:?} {why}"))
    }
}

/// Takes bytes off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
}

fn order_byte(order: Order) -> u8 {
    match order {
        Order::Asc => 0,
        Order::Desc => 1,
    }
}

fn order_from(byte: u8) -> Option<Order> {
    match byte {
        0 => Some(Order::Asc),
        1 => Some(Order::Desc),
        _ => None,
    }
}

fn tenant_tag(tenant: &TenantId) -> [u8; TAG] {
    let digest = Sha256::digest(tenant.as_str().as_bytes());
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&digest[..TAG]);
    tag
}

fn v1_scope_tag(tenant: &TenantId, backend: &str) -> [u8; TAG] {
    let digest = Sha256::new()
        .chain_update(backend.as_bytes())
        .chain_update([0])
        .chain_update(tenant.as_str().as_bytes())
        .finalize();
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&digest[..TAG]);
    tag
}

fn checksum(body: &[u8]) -> [u8; CHECK] {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::new(name).expect("tenant")
    }

    #[test]
    fn a_multi_part_position_round_trips() {
        let parts = [0, 7, u64::MAX, 1 << 40];
        let position = Position::from_parts(&parts).expect("position");
        let cursor = Cursor::encode(&tenant("a"), "kafka", Order::Asc, &position);
        let back = cursor
            .decode(&tenant("a"), "kafka", Order::Asc)
            .expect("decodes");
        assert_eq!(back, position);
        assert_eq!(back.parts().expect("parts"), parts);
        assert!(back.as_sequence().is_err(), "four parts are not a sequence");
    }

    #[test]
    fn long_positions_round_trip_and_longer_ones_are_refused() {
        let bytes: Vec<u8> = (0..MAX_POSITION_BYTES).map(|i| i as u8).collect();
        let position = Position::from_bytes(&bytes).expect("the largest position");
        let cursor = Cursor::encode(&tenant("a"), "dynamo", Order::Desc, &position);
        let back = cursor.decode(&tenant("a"), "dynamo", Order::Desc);
        assert_eq!(back.expect("decodes").as_bytes(), &bytes[..]);
        let too_long = Position::from_bytes(&vec![0; MAX_POSITION_BYTES + 1]);
        assert!(matches!(too_long, Err(Error::InvalidInput(_))));
    }

    #[test]
    fn a_cursor_is_bound_to_its_tenant_backend_and_order() {
        let cursor = Cursor::encode(&tenant("a"), "sqlite", Order::Asc, &Position::sequence(9));
        let fails = |t: &str, backend: &str, order: Order| {
            let e = cursor
                .decode(&tenant(t), backend, order)
                .expect_err("refused");
            assert!(matches!(e, Error::InvalidInput(_)), "{e}");
            e.to_string()
        };
        assert!(fails("b", "sqlite", Order::Asc).contains("another tenant"));
        assert!(fails("a", "memory", Order::Asc).contains("the sqlite backend"));
        assert!(fails("a", "sqlite", Order::Desc).contains("other order"));
        let parts = cursor.parts(&tenant("a")).expect("parts");
        assert_eq!(
            (parts.backend.as_str(), parts.order),
            ("sqlite", Order::Asc)
        );
        assert_eq!(parts.position.as_sequence().expect("sequence"), 9);
    }

    #[test]
    fn damaged_cursors_are_invalid_input_never_a_panic() {
        let good = Cursor::encode(&tenant("a"), "sqlite", Order::Asc, &Position::sequence(3));
        let raw = URL_SAFE_NO_PAD.decode(good.as_str()).expect("base64");
        let mut cases: Vec<String> = vec![String::new(), "!!".into(), "AAAA".into()];
        for cut in 0..raw.len() {
            cases.push(URL_SAFE_NO_PAD.encode(&raw[..cut]));
        }
        for i in 0..raw.len() {
            let mut flipped = raw.clone();
            flipped[i] ^= 0x40;
            cases.push(URL_SAFE_NO_PAD.encode(&flipped));
        }
        for case in cases {
            let decoded =
                Cursor::from_string(case.clone()).decode(&tenant("a"), "sqlite", Order::Asc);
            assert!(
                matches!(decoded, Err(Error::InvalidInput(_))),
                "{case}: {decoded:?}"
            );
        }
    }

    /// A format-1 cursor, built as 0.1 built them.
    fn v1(tenant: &TenantId, backend: &str, order: Order, position: u64) -> Cursor {
        let mut bytes = vec![VERSION_1, order_byte(order)];
        bytes.extend_from_slice(&position.to_be_bytes());
        bytes.extend_from_slice(&v1_scope_tag(tenant, backend));
        let check = checksum(&bytes);
        bytes.extend_from_slice(&check);
        Cursor(URL_SAFE_NO_PAD.encode(bytes))
    }

    #[test]
    fn format_1_cursors_still_decode_on_the_backend_that_made_them() {
        let old = v1(&tenant("a"), "sqlite", Order::Desc, 41);
        let position = old
            .decode(&tenant("a"), "sqlite", Order::Desc)
            .expect("decodes");
        assert_eq!(position, Position::sequence(41));
        for (t, backend, order) in [
            ("b", "sqlite", Order::Desc),
            ("a", "memory", Order::Desc),
            ("a", "sqlite", Order::Asc),
        ] {
            let refused = old.decode(&tenant(t), backend, order);
            assert!(
                matches!(refused, Err(Error::InvalidInput(_))),
                "{t} {backend} {order:?}"
            );
        }
    }
}
