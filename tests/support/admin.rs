//! A client of the admin API (`[admin] listen`), for the live-organization tests.

use std::net::SocketAddr;

use serde_json::{json, Value};

/// The token the tests' `[admin]` sections read from `ADMIN_TOKEN`
/// (see [`super::service::registry_sections`]).
pub const TOKEN: &str = "test-admin-token-9Qz4";

pub struct Api {
    pub admin: SocketAddr,
    http: reqwest::Client,
}

/// A status and its JSON body (`Null` when there is none).
pub type Answer = (u16, Value);

impl Api {
    pub fn new(admin: SocketAddr) -> Api {
        Api {
            admin,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v1/organizations{path}", self.admin)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("admin API request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `PUT /v1/organizations/{id}` with a JSON body, authorized.
    pub async fn put(&self, id: &str, value: &Value) -> Answer {
        self.put_raw(id, "application/json", value.to_string(), Some(TOKEN))
            .await
    }

    /// `PUT` with any body, content type and token (`None`: no authorization header).
    pub async fn put_raw(
        &self,
        id: &str,
        content_type: &str,
        body: String,
        token: Option<&str>,
    ) -> Answer {
        let mut request = self
            .http
            .put(self.url(&format!("/{id}")))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.send(
            self.http
                .get(self.url(&format!("/{id}")))
                .bearer_auth(TOKEN),
        )
        .await
    }

    /// `GET /v1/organizations?limit=..&after=..`.
    pub async fn list(&self, limit: usize, after: Option<&str>) -> Answer {
        let mut url = format!("{}?limit={limit}", self.url(""));
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        self.send(self.http.get(url).bearer_auth(TOKEN)).await
    }

    pub async fn delete(&self, id: &str) -> Answer {
        self.send(
            self.http
                .delete(self.url(&format!("/{id}")))
                .bearer_auth(TOKEN),
        )
        .await
    }

    /// `POST /v1/organizations/{id}/test`: a signed ping.
    pub async fn test(&self, id: &str) -> Answer {
        self.send(
            self.http
                .post(self.url(&format!("/{id}/test")))
                .bearer_auth(TOKEN),
        )
        .await
    }
}

/// A development endpoint (plain http to loopback) at `url`, plus `extra` keys.
pub fn endpoint(url: &str, extra: Value) -> Value {
    let mut value = json!({ "url": url, "allow_http": true, "allow_private_addresses": true });
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), extra) {
        map.extend(extra);
    }
    value
}
