//! The one client of slotpack's REST API, shared by `slotpack status` and
//! `slotpack migrate`: bearer auth, JSON in and out, and typed calls for
//! what they use. Errors say which orchestrator did not answer.

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api_types::{BotInfo, CreateTenant, PoolStatus};
use crate::classes::{ClassList, ClassSpec};

/// A client of one orchestrator.
pub struct ApiClient {
    addr: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<axum::body::Bytes>>,
}

/// An answer: its status and JSON body (`Value::Null` when not JSON).
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The error message of a JSON error answer (empty if none).
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// The body as `T` if the status is 2xx; else an error naming `what`.
    pub fn into_ok<T: DeserializeOwned>(self, what: &str) -> anyhow::Result<T> {
        if !(200..300).contains(&self.status) {
            bail!("{what} ({}): {}", self.status, self.message());
        }
        serde_json::from_value(self.body).with_context(|| format!("{what}: unexpected answer"))
    }
}

impl ApiClient {
    /// A client of the orchestrator at `addr` (`host:port`, or
    /// `http://host:port`), with `token`.
    pub fn new(addr: &str, token: Option<String>) -> Self {
        let addr = addr.trim_start_matches("http://").trim_end_matches('/');
        Self {
            addr: addr.to_string(),
            token,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `method path` with an optional JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(axum::body::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
        let resp = self.http.request(req).await.with_context(|| {
            format!(
                "orchestrator at {} does not answer (is slotpack serve running?)",
                self.addr
            )
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// `GET /api/pool/status`, as JSON (`raw`) or typed.
    pub async fn pool_status_json(&self) -> anyhow::Result<Value> {
        let a = self.call("GET", "/api/pool/status", None).await?;
        if a.status != 200 {
            bail!("pool status ({}): {}", a.status, a.message());
        }
        Ok(a.body)
    }

    /// `GET /api/pool/status`.
    pub async fn pool_status(&self) -> anyhow::Result<PoolStatus> {
        self.call("GET", "/api/pool/status", None)
            .await?
            .into_ok("pool status")
    }

    /// `GET /api/pool/classes`.
    pub async fn classes(&self) -> anyhow::Result<ClassList> {
        self.call("GET", "/api/pool/classes", None)
            .await?
            .into_ok("listing pool classes")
    }

    /// `PUT /api/pool/classes/{name}`.
    pub async fn put_class(&self, name: &str, spec: &ClassSpec) -> anyhow::Result<ClassList> {
        let body = serde_json::to_value(spec)?;
        self.call("PUT", &format!("/api/pool/classes/{name}"), Some(&body))
            .await?
            .into_ok(&format!(
                "defining pool class {name} for image {}",
                spec.image
            ))
    }

    /// `POST /api/tenants`; the raw answer (a refusal is for the caller to handle).
    pub async fn create_tenant(&self, t: &CreateTenant) -> anyhow::Result<Answer> {
        self.call("POST", "/api/tenants", Some(&serde_json::to_value(t)?))
            .await
    }

    /// `POST /api/tenants?start=false`: placed, not started; the raw answer.
    pub async fn create_tenant_stopped(&self, t: &CreateTenant) -> anyhow::Result<Answer> {
        self.call(
            "POST",
            "/api/tenants?start=false",
            Some(&serde_json::to_value(t)?),
        )
        .await
    }

    /// `method path` with raw bytes both ways; the status and body.
    pub async fn call_bytes(
        &self,
        method: &str,
        path: &str,
        body: axum::body::Bytes,
    ) -> anyhow::Result<(u16, axum::body::Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/x-tar");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .http
            .request(req.body(Full::new(body))?)
            .await
            .with_context(|| format!("orchestrator at {} does not answer", self.addr))?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// `PUT /api/tenants/{id}/volume?path=P` with a tar.
    pub async fn put_volume(
        &self,
        id: &str,
        path: &str,
        tar: axum::body::Bytes,
    ) -> anyhow::Result<()> {
        let q: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        let (status, body) = self
            .call_bytes("PUT", &format!("/api/tenants/{id}/volume?path={q}"), tar)
            .await?;
        if !(200..300).contains(&status) {
            bail!(
                "filling {id}'s volume {path} ({status}): {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// `GET /api/tenants/{id}/volume?path=P[&owner=U:G]`: a tar.
    pub async fn get_volume(
        &self,
        id: &str,
        path: &str,
        owner: Option<(u64, u64)>,
    ) -> anyhow::Result<axum::body::Bytes> {
        let q: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        let owner = owner.map_or(String::new(), |(u, g)| format!("&owner={u}:{g}"));
        let (status, body) = self
            .call_bytes(
                "GET",
                &format!("/api/tenants/{id}/volume?path={q}{owner}"),
                axum::body::Bytes::new(),
            )
            .await?;
        if status != 200 {
            bail!(
                "reading {id}'s volume {path} ({status}): {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }

    /// `DELETE /api/tenants/{id}`; the raw answer.
    pub async fn delete_tenant(&self, id: &str) -> anyhow::Result<Answer> {
        self.call("DELETE", &format!("/api/tenants/{id}"), None)
            .await
    }

    /// `GET path`, read as it comes: `on_chunk` gets each piece until the
    /// server ends the answer (or `on_chunk` fails). A status other than
    /// 200 is an error with the server's message.
    pub async fn stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
        mut on_chunk: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self
            .http
            .request(req.body(Full::new(axum::body::Bytes::new()))?)
            .await
            .with_context(|| {
                format!(
                    "orchestrator at {} does not answer (is slotpack serve running?)",
                    self.addr
                )
            })?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let bytes = body.collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            bail!("GET {path} ({status}): {msg}");
        }
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                on_chunk(&data)?;
            }
        }
        Ok(())
    }

    /// `GET /api/pool/bot/{id}`.
    pub async fn bot(&self, id: &str) -> anyhow::Result<BotInfo> {
        self.call("GET", &format!("/api/pool/bot/{id}"), None)
            .await?
            .into_ok("where the tenant runs")
    }
}
