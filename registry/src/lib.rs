//! `cd-registry`: the registry of services, instances and live colors.
//!
//! Layers, bottom up (docs/semantics.md, "Layers"): [`store`] (a revisioned key-value store with
//! etcd's shape), [`catalog`] (the domain, written only against the store),
//! [`api`] (the gRPC edge) and [`server`] (assembling them into a server that
//! starts, serves and drains). `main.rs` only parses flags and calls [`server`].
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod connection;
pub mod dns;
pub mod metrics;
pub mod restore;
pub mod server;
pub mod store;
pub mod ui;
