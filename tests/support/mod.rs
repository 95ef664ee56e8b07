//! Shared integration-test harness: a real Kafka broker, fresh names, and helpers that wait on
//! conditions with deadlines.
#![allow(dead_code)]

pub mod admin;
pub mod command;
pub mod kafka;
pub mod oauth_server;
pub mod receiver;
pub mod records;
pub mod schemas;
pub mod service;
