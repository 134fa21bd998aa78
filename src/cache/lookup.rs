//! One live GET for a DGD the cache does not know: the watch may lag a DGD created a moment ago,
//! and its first pods must not miss their namespace because of that.

use std::time::Duration;

use kube::Client;

use super::watch::dgd_api;
use crate::engine::DgdRecord;

#[derive(Debug)]
pub enum Lookup {
    Found(DgdRecord),
    Absent,
    /// The API server did not answer in time or failed: the caller takes the miss path.
    Failed(String),
}

#[derive(Clone)]
pub struct LiveLookup {
    client: Client,
}

impl LiveLookup {
    pub fn new(client: Client) -> Self {
        LiveLookup { client }
    }

    pub async fn dgd(&self, namespace: &str, name: &str, timeout: Duration) -> Lookup {
        let api = dgd_api(self.client.clone(), Some(namespace));
        match tokio::time::timeout(timeout, api.get_opt(name)).await {
            Err(_) => Lookup::Failed(format!("no answer within {timeout:?}")),
            Ok(Err(err)) => Lookup::Failed(err.to_string()),
            Ok(Ok(None)) => Lookup::Absent,
            Ok(Ok(Some(obj))) => Lookup::Found(obj.record(namespace)),
        }
    }
}
