//! Tenant identity.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The longest tenant id accepted, in characters.
pub const MAX_TENANT_LEN: usize = 128;

/// A tenant: every operation names one, and nothing ever crosses tenants.
///
/// 1 to 128 characters of `[A-Za-z0-9._:@-]`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates `id` and wraps it.
    ///
    /// ```
    /// use zapinbox_core::TenantId;
    /// assert!(TenantId::new("acme-prod").is_ok());
    /// assert!(TenantId::new("").is_err());
    /// assert!(TenantId::new("has space").is_err());
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self> {
        let id = id.as_ref();
        if let Some(bad) = id.chars().find(|c| !is_tenant_char(*c)) {
            return Err(Error::invalid(format!(
                "tenant id may hold only ASCII letters, digits and . _ : @ -, got {bad:?}"
            )));
        }
        // Only ASCII passed: bytes are characters.
        if id.is_empty() || id.len() > MAX_TENANT_LEN {
            return Err(Error::invalid(format!(
                "tenant id must be 1 to {MAX_TENANT_LEN} characters, got {}",
                id.len()
            )));
        }
        Ok(TenantId(id.into()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

impl FromStr for TenantId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TenantId::new(s)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::new(s).map_err(serde::de::Error::custom)
    }
}
