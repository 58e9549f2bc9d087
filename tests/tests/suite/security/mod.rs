//! The holes a security review found (docs/security.md), each shown closed
//! against a real registry: what a scoped deployer, an agent, a forged
//! record and an unauthenticated client can no longer do.

mod dashboard;
mod labels;
mod limits;
mod metrics;
mod ownership;
mod paused;
mod revocation;
mod templates;
