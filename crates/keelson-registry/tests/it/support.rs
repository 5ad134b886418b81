//! Test support: a registry served on 127.0.0.1:0 over a temporary data directory, and a small
//! HTTP client.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keelson_registry::RegistryConfig;
use sha2::Digest as _;

pub const TOKEN: &str = "s3cret-test-token";

pub struct TestRegistry {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl TestRegistry {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut RegistryConfig)) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mut config = RegistryConfig::new(&data_dir, TOKEN);
        configure(&mut config);
        Self::start_on(temp, data_dir, config).await
    }

    /// Serves an existing data directory (restart simulation).
    pub async fn start_on(
        temp: tempfile::TempDir,
        data_dir: PathBuf,
        config: RegistryConfig,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            keelson_registry::serve(listener, config).await.unwrap();
        });
        Self {
            addr,
            data_dir,
            temp: Some(temp),
            server,
        }
    }

    /// Stops the server and hands back its directory, for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        self.server.abort();
        (
            self.temp.take().expect("temp dir present"),
            self.data_dir.clone(),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut all: Vec<(String, String)> =
            vec![("authorization".into(), format!("Bearer {TOKEN}"))];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        send_raw(method, &self.url(path), &all, body.into()).await
    }

    pub async fn anonymous(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        send_raw(method, &self.url(path), &[], body.into()).await
    }

    /// Monolithic upload of `data` to `repo`; returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        let reply = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        digest
    }

    /// Pushes an OCI image manifest with one config and the given layers; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &serde_json::Value,
    ) -> Reply {
        let body = serde_json::to_vec(manifest).unwrap();
        let media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_owned();
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", &media_type)],
            body,
        )
        .await
    }
}

pub async fn send_raw(
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest_of(data), "size": data.len() })
}

/// An OCI image manifest over `config` and `layers` (blobs that must be pushed separately).
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    })
}
