//! The rules, one public async function each, grouped by subject.

mod ack_delete;
mod batch;
mod faults;
mod idempotency;
mod ingest;
mod input;
mod lease;
mod pull;
mod quota;
mod rate_limit;
mod restart;
mod retention;
mod shared;
mod subscribe;
mod usage;
mod worker;

pub use ack_delete::*;
pub use batch::*;
pub use faults::*;
pub use idempotency::*;
pub use ingest::*;
pub use input::*;
pub use lease::*;
pub use pull::*;
pub use quota::*;
pub use rate_limit::*;
pub use restart::*;
pub use retention::*;
pub use shared::*;
pub use subscribe::*;
pub use usage::*;
pub use worker::*;
