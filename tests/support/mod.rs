//! Shared integration-test harness: a real Kafka broker, fresh names, and helpers that wait on
//! conditions with deadlines.
#![allow(dead_code)]

pub mod kafka;
pub mod receiver;
pub mod schemas;
pub mod service;
