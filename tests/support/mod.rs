//! Shared helpers for the integration tests. Each test crate does `mod support;` and uses what it
//! needs, so unused items are expected here.
#![allow(dead_code, unused_imports)]

pub mod fake_api;
pub mod webhook;

pub use fake_api::FakeApi;
