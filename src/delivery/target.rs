//! One organization's delivery target: its endpoint, its retry policy and its concurrency cap,
//! built once from the configuration and shared by the pipeline's lanes and by `redrive`.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Deliverer, Endpoint, RetryPolicy};
use crate::config::OrganizationSettings;

pub struct Target {
    pub endpoint: Endpoint,
    pub policy: RetryPolicy,
    /// Permits for requests in flight to this endpoint (`concurrency`).
    pub concurrency: Semaphore,
}

impl Target {
    pub fn new(deliverer: &Deliverer, organization_id: &str, org: &OrganizationSettings) -> Self {
        Target {
            endpoint: deliverer.endpoint(organization_id, Arc::new(org.clone())),
            policy: RetryPolicy::new(&org.retry),
            concurrency: Semaphore::new(org.concurrency),
        }
    }
}
