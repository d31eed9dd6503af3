//! A small client of the operator's admin API (the relay's `/relay/v1/admin` and the
//! gateway's `/admin/v1`), for operator commands, the demo and the bench.

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;

/// A small client of the admin API: bearer-authenticated JSON calls; an error answer
/// becomes an error carrying the API's message and details.
pub struct AdminClient {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl AdminClient {
    pub fn new(url: String, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// A GET with query parameters (encoded by the HTTP client).
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let request = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .bearer_auth(&self.token);
        self.send(request).await
    }

    /// A POST of a text body (a policy file) with query parameters.
    pub async fn post_text(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: String,
    ) -> Result<Value> {
        let request = self
            .http
            .post(format!("{}{path}", self.url))
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, "application/toml")
            .body(body)
            .bearer_auth(&self.token);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("reaching the node at {}", self.url))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no details");
            // The Cloud API's errors say what exactly was wrong in `error_data.details`.
            match value["error"]["error_data"]["details"].as_str() {
                Some(details) => bail!("{status}: {message}: {details}"),
                None => bail!("{status}: {message}"),
            }
        }
        Ok(value)
    }
}
