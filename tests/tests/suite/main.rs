//! Every end-to-end test, in one binary (one link, shared helpers).

mod agent;
mod api;
mod cli;
mod conformance;
mod crash;
mod deploy;
mod proxy;
mod watch;
