//! Shared helpers for the integration tests. Each test crate does `mod support;` and uses what it
//! needs, so unused items are expected here.
#![allow(dead_code, unused_imports)]

pub mod fake_api;

pub use fake_api::FakeApi;
