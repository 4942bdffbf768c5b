//! `Api`: a small blocking client of the engine's HTTP API (ureq), with the bearer token, JSON
//! bodies, and RFC 9457 problem details turned into readable errors.

use serde_json::Value;

/// Where the engine's API is and how to authenticate.
pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request("GET", path), None)
    }

    /// Every item of the paged list at `path`, filtered by `query`, following the pages'
    /// cursors (no item twice and none missed while the list grows).
    pub fn get_all(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.request("GET", path).query("limit", "1000");
            for (key, value) in query {
                request = request.query(key, value);
            }
            if let Some(cursor) = &cursor {
                request = request.query("cursor", cursor);
            }
            let page = self.send(request, None)?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request("POST", path), Some(Body::Json(body)))
    }

    /// `DELETE path` with a JSON body.
    pub fn delete_with(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request("DELETE", path), Some(Body::Json(body)))
    }

    /// `POST path?query` with raw bytes (firmware images, plugin components).
    pub fn upload(
        &self,
        path: &str,
        query: &[(&str, &str)],
        bytes: &[u8],
    ) -> anyhow::Result<Value> {
        let mut request = self
            .request("POST", path)
            .set("Content-Type", "application/octet-stream");
        for (key, value) in query {
            request = request.query(key, value);
        }
        self.send(request, Some(Body::Bytes(bytes)))
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    fn send(&self, request: ureq::Request, body: Option<Body<'_>>) -> anyhow::Result<Value> {
        let url = request.url().to_string();
        let response = match body {
            None => request.call(),
            Some(Body::Json(value)) => request.send_json(value),
            Some(Body::Bytes(bytes)) => request.send_bytes(bytes),
        };
        match response {
            Ok(response) if response.status() == 204 => Ok(Value::Null),
            Ok(response) => Ok(response.into_json()?),
            Err(ureq::Error::Status(status, response)) => {
                let problem: Value = response.into_json().unwrap_or(Value::Null);
                let detail = problem["detail"].as_str().unwrap_or("");
                let title = problem["title"].as_str().unwrap_or("error");
                anyhow::bail!("{status} {title}: {detail}")
            }
            Err(error) => anyhow::bail!("{url}: {error}"),
        }
    }
}

enum Body<'a> {
    Json(&'a Value),
    Bytes(&'a [u8]),
}
