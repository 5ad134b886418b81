//! OCI Distribution API over HTTP: uploads (monolithic, chunked, resumed), manifests, tags,
//! catalog, referrers, deletes and authentication.

use hyper::{Method, StatusCode};
use tokio::io::AsyncWriteExt as _;

use crate::support::{TOKEN, TestRegistry, basic, descriptor, digest_of, image_manifest, send_raw};

#[tokio::test]
async fn base_endpoint_challenges_with_basic_and_accepts_the_token() {
    let registry = TestRegistry::start().await;
    let anonymous = registry.anonymous(Method::GET, "/v2/", "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.header("www-authenticate"),
        "Basic realm=\"keelson\""
    );
    assert_eq!(anonymous.error_code(), "UNAUTHORIZED");
    assert_eq!(
        anonymous.header("docker-distribution-api-version"),
        "registry/2.0"
    );

    let url = registry.url("/v2/");
    let good = send_raw(
        Method::GET,
        &url,
        &[("authorization".into(), basic("keelson", TOKEN))],
        "".into(),
    )
    .await;
    assert_eq!(good.status, StatusCode::OK);
    assert_eq!(
        good.header("docker-distribution-api-version"),
        "registry/2.0"
    );
    for bad in [
        basic("keelson", "wrong"),
        basic("admin", TOKEN),
        "Bearer nope".to_owned(),
        "Digest x".to_owned(),
    ] {
        let reply = send_raw(
            Method::GET,
            &url,
            &[("authorization".into(), bad.clone())],
            "".into(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let bearer = registry.send(Method::GET, "/v2/", &[], "").await;
    assert_eq!(bearer.status, StatusCode::OK);
}

#[tokio::test]
async fn monolithic_upload_then_head_get_and_range() {
    let registry = TestRegistry::start().await;
    let data = b"hello, layer".to_vec();
    let digest = registry.push_blob("team/app", &data).await;

    let head = registry
        .send(
            Method::HEAD,
            &format!("/v2/team/app/blobs/{digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), data.len().to_string());
    assert_eq!(head.header("docker-content-digest"), digest);
    assert!(head.body.is_empty());

    let get = registry
        .send(
            Method::GET,
            &format!("/v2/team/app/blobs/{digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(get.body.as_ref(), data.as_slice());

    let range = registry
        .send(
            Method::GET,
            &format!("/v2/team/app/blobs/{digest}"),
            &[("range", "bytes=7-11")],
            "",
        )
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.body.as_ref(), b"layer");
    assert_eq!(range.header("content-range"), "bytes 7-11/12");

    // Linked only into team/app: another repository does not see it until mounted.
    let other = registry
        .send(Method::HEAD, &format!("/v2/other/blobs/{digest}"), &[], "")
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let mount = registry
        .send(
            Method::POST,
            &format!("/v2/other/blobs/uploads/?mount={digest}&from=team/app"),
            &[],
            "",
        )
        .await;
    assert_eq!(mount.status, StatusCode::CREATED);
    assert_eq!(
        mount.header("location"),
        format!("/v2/other/blobs/{digest}")
    );
    let other = registry
        .send(Method::HEAD, &format!("/v2/other/blobs/{digest}"), &[], "")
        .await;
    assert_eq!(other.status, StatusCode::OK);

    // Blob delete unlinks from one repository only.
    let delete = registry
        .send(
            Method::DELETE,
            &format!("/v2/other/blobs/{digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(delete.status, StatusCode::ACCEPTED);
    assert_eq!(
        registry
            .send(Method::HEAD, &format!("/v2/other/blobs/{digest}"), &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        registry
            .send(
                Method::HEAD,
                &format!("/v2/team/app/blobs/{digest}"),
                &[],
                ""
            )
            .await
            .status,
        StatusCode::OK
    );
}

/// Sends a PATCH that promises `declared` bytes but delivers only `sent`, then drops the
/// connection: an interrupted chunk.
async fn interrupted_patch(registry: &TestRegistry, location: &str, declared: usize, sent: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(registry.addr).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n",
        registry.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(stream);
}

async fn upload_offset(registry: &TestRegistry, location: &str) -> u64 {
    let status = registry.send(Method::GET, location, &[], "").await;
    assert_eq!(status.status, StatusCode::NO_CONTENT, "{:?}", status.body);
    let range = status.header("range").to_owned();
    let end: u64 = range.strip_prefix("0-").unwrap().parse().unwrap();
    if end == 0 { 0 } else { end + 1 }
}

#[tokio::test]
async fn chunked_upload_interrupted_is_resumed_after_a_restart() {
    let registry = TestRegistry::start().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = digest_of(&data);

    let start = registry
        .send(Method::POST, "/v2/resume/me/blobs/uploads/", &[], "")
        .await;
    assert_eq!(start.status, StatusCode::ACCEPTED);
    let location = start.header("location").to_owned();
    assert!(!start.header("docker-upload-uuid").is_empty());
    assert_eq!(start.header("range"), "0-0");

    let first = registry
        .send(
            Method::PATCH,
            &location,
            &[
                ("content-range", "0-99999"),
                ("content-type", "application/octet-stream"),
            ],
            data[..100_000].to_vec(),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), "0-99999");

    // The second chunk is cut off after 50 000 of its 100 000 bytes.
    interrupted_patch(&registry, &location, 100_000, &data[100_000..150_000]).await;
    let mut offset = 0;
    for _ in 0..50 {
        offset = upload_offset(&registry, &location).await;
        if offset == 150_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(offset, 150_000);

    // The process restarts: the session is on disk, the running hash is recomputed.
    let (temp, data_dir) = registry.stop();
    let config = keelson_registry::RegistryConfig::new(&data_dir, TOKEN);
    let registry = TestRegistry::start_on(temp, data_dir, config).await;
    let offset = upload_offset(&registry, &location).await as usize;
    assert_eq!(offset, 150_000);

    let range = format!("{offset}-{}", data.len() - 1);
    let rest = registry
        .send(
            Method::PATCH,
            &location,
            &[("content-range", &range)],
            data[offset..].to_vec(),
        )
        .await;
    assert_eq!(rest.status, StatusCode::ACCEPTED);
    let done = registry
        .send(Method::PUT, &format!("{location}?digest={digest}"), &[], "")
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
    assert_eq!(done.header("docker-content-digest"), digest);

    let get = registry
        .send(
            Method::GET,
            &format!("/v2/resume/me/blobs/{digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(get.body.as_ref(), data.as_slice());
    // The session is gone.
    let gone = registry.send(Method::GET, &location, &[], "").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_does_not_change_the_session() {
    let registry = TestRegistry::start().await;
    let start = registry
        .send(Method::POST, "/v2/chunks/blobs/uploads/", &[], "")
        .await;
    let location = start.header("location").to_owned();
    let first = registry
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "0-3")],
            "abcd",
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let skipped = registry
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "10-13")],
            "wxyz",
        )
        .await;
    assert_eq!(skipped.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(skipped.header("range"), "0-3");
    let repeated = registry
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "0-3")],
            "abcd",
        )
        .await;
    assert_eq!(repeated.status, StatusCode::RANGE_NOT_SATISFIABLE);
    // A chunk whose length does not match its range is refused and dropped.
    let short = registry
        .send(Method::PATCH, &location, &[("content-range", "4-9")], "ef")
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    // PUT with the final chunk completes it.
    let digest = digest_of(b"abcdef");
    let done = registry
        .send(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[("content-range", "4-5")],
            "ef",
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
}

#[tokio::test]
async fn wrong_digest_is_rejected_and_nothing_is_stored() {
    let registry = TestRegistry::start().await;
    let claimed = digest_of(b"something else");
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={claimed}"),
            &[],
            b"actual bytes".to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    assert!(!String::from_utf8_lossy(&reply.body).contains(registry.data_dir.to_str().unwrap()));
    for digest in [claimed, digest_of(b"actual bytes")] {
        let head = registry
            .send(Method::HEAD, &format!("/v2/app/blobs/{digest}"), &[], "")
            .await;
        assert_eq!(head.status, StatusCode::NOT_FOUND);
    }
    let blobs: Vec<_> = walk_files(&registry.data_dir.join("blobs"));
    assert!(blobs.is_empty(), "{blobs:?}");
    let uploads: Vec<_> = walk_files(&registry.data_dir.join("uploads"));
    assert!(uploads.is_empty(), "{uploads:?}");

    // Chunked, too.
    let start = registry
        .send(Method::POST, "/v2/app/blobs/uploads/", &[], "")
        .await;
    let location = start.header("location").to_owned();
    registry
        .send(Method::PATCH, &location, &[], "partial")
        .await;
    let bad = registry
        .send(
            Method::PUT,
            &format!("{location}?digest={}", digest_of(b"other")),
            &[],
            "",
        )
        .await;
    assert_eq!(bad.error_code(), "DIGEST_INVALID");
    assert!(walk_files(&registry.data_dir.join("blobs")).is_empty());
    let malformed = registry
        .send(
            Method::POST,
            "/v2/app/blobs/uploads/?digest=sha256:xyz",
            &[],
            "x",
        )
        .await;
    assert_eq!(malformed.error_code(), "DIGEST_INVALID");
}

pub fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn manifest_push_with_missing_blob_is_rejected() {
    let registry = TestRegistry::start().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    registry.push_blob("app", config).await;
    let manifest = image_manifest(config, &[b"never uploaded"]);
    let reply = registry.push_manifest("app", "v1", &manifest).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        reply.json()["errors"][0]["detail"]["digest"],
        digest_of(b"never uploaded")
    );

    let garbage = registry
        .send(
            Method::PUT,
            "/v2/app/manifests/v1",
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            "{not json",
        )
        .await;
    assert_eq!(garbage.error_code(), "MANIFEST_INVALID");
    let unknown = registry
        .send(Method::GET, "/v2/app/manifests/v1", &[], "")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifests_by_tag_and_digest_tags_pagination_catalog_and_delete() {
    let registry = TestRegistry::start().await;
    let config = br#"{"os":"linux"}"#;
    let layer = b"layer bytes";
    registry.push_blob("ns/app", config).await;
    registry.push_blob("ns/app", layer).await;
    let manifest = image_manifest(config, &[layer]);
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = digest_of(&body);
    for tag in ["v1", "v2", "v3", "latest"] {
        let put = registry.push_manifest("ns/app", tag, &manifest).await;
        assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
        assert_eq!(put.header("docker-content-digest"), digest);
    }
    let get = registry
        .send(Method::GET, "/v2/ns/app/manifests/v2", &[], "")
        .await;
    assert_eq!(get.body.as_ref(), body.as_slice());
    assert_eq!(
        get.header("content-type"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(get.header("docker-content-digest"), digest);
    let head = registry
        .send(
            Method::HEAD,
            &format!("/v2/ns/app/manifests/{digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), body.len().to_string());

    // Docker schema 2 manifest and an index over it.
    registry.push_blob("other", config).await;
    registry.push_blob("other", layer).await;
    let mut docker = image_manifest(config, &[layer]);
    docker["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    let docker_put = registry.push_manifest("other", "d", &docker).await;
    assert_eq!(docker_put.status, StatusCode::CREATED);
    let docker_digest = docker_put.header("docker-content-digest").to_owned();
    let docker_size = serde_json::to_vec(&docker).unwrap().len();
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{ "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": docker_digest, "size": docker_size, "platform": {"architecture": "amd64", "os": "linux"} }],
    });
    assert_eq!(
        registry.push_manifest("other", "multi", &list).await.status,
        StatusCode::CREATED
    );
    let missing_child = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor("application/vnd.oci.image.manifest.v1+json", b"nope")],
    });
    assert_eq!(
        registry
            .push_manifest("other", "broken", &missing_child)
            .await
            .error_code(),
        "MANIFEST_BLOB_UNKNOWN"
    );
    let got = registry
        .send(Method::GET, "/v2/other/manifests/multi", &[], "")
        .await;
    assert_eq!(
        got.header("content-type"),
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );

    let tags = registry
        .send(Method::GET, "/v2/ns/app/tags/list", &[], "")
        .await
        .json();
    assert_eq!(
        tags,
        serde_json::json!({ "name": "ns/app", "tags": ["latest", "v1", "v2", "v3"] })
    );
    let page = registry
        .send(Method::GET, "/v2/ns/app/tags/list?n=2", &[], "")
        .await;
    assert_eq!(page.json()["tags"], serde_json::json!(["latest", "v1"]));
    assert_eq!(
        page.header("link"),
        "</v2/ns/app/tags/list?n=2&last=v1>; rel=\"next\""
    );
    let next = registry
        .send(Method::GET, "/v2/ns/app/tags/list?n=2&last=v1", &[], "")
        .await;
    assert_eq!(next.json()["tags"], serde_json::json!(["v2", "v3"]));
    assert_eq!(next.header("link"), "");
    let unknown = registry
        .send(Method::GET, "/v2/nope/tags/list", &[], "")
        .await;
    assert_eq!(unknown.error_code(), "NAME_UNKNOWN");

    let catalog = registry
        .send(Method::GET, "/v2/_catalog", &[], "")
        .await
        .json();
    assert_eq!(
        catalog,
        serde_json::json!({ "repositories": ["ns/app", "other"] })
    );
    let catalog = registry
        .send(Method::GET, "/v2/_catalog?n=1", &[], "")
        .await;
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!(["ns/app"])
    );
    assert!(catalog.header("link").contains("last=ns/app"));

    // Deleting a tag keeps the manifest; deleting by digest removes it and its tags.
    assert_eq!(
        registry
            .send(Method::DELETE, "/v2/ns/app/manifests/v3", &[], "")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        registry
            .send(Method::GET, "/v2/ns/app/manifests/v3", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        registry
            .send(Method::GET, "/v2/ns/app/manifests/v1", &[], "")
            .await
            .status,
        StatusCode::OK
    );
    let delete = registry
        .send(
            Method::DELETE,
            &format!("/v2/ns/app/manifests/{digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(delete.status, StatusCode::ACCEPTED);
    assert_eq!(
        registry
            .send(Method::GET, "/v2/ns/app/manifests/v1", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        registry
            .send(
                Method::GET,
                &format!("/v2/ns/app/manifests/{digest}"),
                &[],
                ""
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let tags = registry
        .send(Method::GET, "/v2/ns/app/tags/list", &[], "")
        .await
        .json();
    assert_eq!(tags["tags"], serde_json::json!([]));
    assert_eq!(
        registry
            .send(
                Method::DELETE,
                &format!("/v2/ns/app/manifests/{digest}"),
                &[],
                ""
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn referrers_lists_manifests_with_that_subject_and_filters_by_artifact_type() {
    let registry = TestRegistry::start().await;
    let config = br#"{}"#;
    registry.push_blob("app", config).await;
    let image = image_manifest(config, &[]);
    let image_put = registry.push_manifest("app", "v1", &image).await;
    let image_digest = image_put.header("docker-content-digest").to_owned();
    let subject = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image_digest,
        "size": serde_json::to_vec(&image).unwrap().len(),
    });
    let empty_config = serde_json::json!({ "mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2 });
    let mut referrer_digests = Vec::new();
    for artifact_type in [
        "application/vnd.example.sbom",
        "application/vnd.example.signature",
    ] {
        let referrer = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type,
            "config": empty_config,
            "layers": [],
            "subject": subject,
            "annotations": { "org.example": "yes" },
        });
        let put = registry
            .push_manifest(
                "app",
                &digest_of(&serde_json::to_vec(&referrer).unwrap()),
                &referrer,
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
        assert_eq!(put.header("oci-subject"), image_digest);
        referrer_digests.push(put.header("docker-content-digest").to_owned());
    }
    let all = registry
        .send(
            Method::GET,
            &format!("/v2/app/referrers/{image_digest}"),
            &[],
            "",
        )
        .await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.header("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let index = all.json();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let filtered = registry
        .send(
            Method::GET,
            &format!("/v2/app/referrers/{image_digest}?artifactType=application/vnd.example.sbom"),
            &[],
            "",
        )
        .await;
    assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
    let manifests = filtered.json()["manifests"].clone();
    assert_eq!(manifests.as_array().unwrap().len(), 1);
    assert_eq!(manifests[0]["digest"], referrer_digests[0]);
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(manifests[0]["annotations"]["org.example"], "yes");
    let none = registry
        .send(
            Method::GET,
            &format!("/v2/app/referrers/{}", digest_of(b"x")),
            &[],
            "",
        )
        .await;
    assert_eq!(none.json()["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn anonymous_writes_are_refused_and_reads_follow_the_config() {
    let private = TestRegistry::start().await;
    let digest = private.push_blob("app", b"data").await;
    let push = private
        .anonymous(Method::POST, "/v2/app/blobs/uploads/", "")
        .await;
    assert_eq!(push.status, StatusCode::UNAUTHORIZED);
    assert_eq!(push.header("www-authenticate"), "Basic realm=\"keelson\"");
    let read = private
        .anonymous(Method::GET, &format!("/v2/app/blobs/{digest}"), "")
        .await;
    assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    let put = private
        .anonymous(Method::PUT, "/artifacts/p/n/1/f", "x")
        .await;
    assert_eq!(put.status, StatusCode::UNAUTHORIZED);

    let public = TestRegistry::start_with(|config| config.anonymous_read = true).await;
    let digest = public.push_blob("app", b"data").await;
    let read = public
        .anonymous(Method::GET, &format!("/v2/app/blobs/{digest}"), "")
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body.as_ref(), b"data");
    for method in [Method::POST, Method::DELETE] {
        let path = if method == Method::POST {
            "/v2/app/blobs/uploads/".to_owned()
        } else {
            format!("/v2/app/blobs/{digest}")
        };
        assert_eq!(
            public.anonymous(method, &path, "").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Wrong credentials are refused even for reads.
    let url = public.url(&format!("/v2/app/blobs/{digest}"));
    let wrong = send_raw(
        Method::GET,
        &url,
        &[("authorization".into(), basic("keelson", "bad"))],
        "".into(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hostile_repository_names_and_references_are_rejected() {
    let registry = TestRegistry::start().await;
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/%2e%2e/tags/list",
        "/v2/a%2F..%2F..%2Fetc/tags/list",
        "/v2/_layers/tags/list",
    ] {
        let reply = registry.send(Method::GET, path, &[], "").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.error_code(), "NAME_INVALID", "{path}");
    }
    let bad_tag = registry
        .send(Method::GET, "/v2/app/manifests/.hidden", &[], "")
        .await;
    assert_eq!(bad_tag.status, StatusCode::BAD_REQUEST);
    let bad_digest = registry
        .send(Method::GET, "/v2/app/blobs/sha256:..%2F..%2Fx", &[], "")
        .await;
    assert!(bad_digest.status.is_client_error(), "{}", bad_digest.status);
    let bad_digest = registry
        .send(Method::GET, "/v2/app/blobs/sha256:abc", &[], "")
        .await;
    assert_eq!(bad_digest.error_code(), "DIGEST_INVALID");
    let bad_upload = registry
        .send(Method::GET, "/v2/app/blobs/uploads/..", &[], "")
        .await;
    assert_eq!(bad_upload.error_code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn concurrent_uploads_of_the_same_blob_are_safe() {
    let registry = std::sync::Arc::new(TestRegistry::start().await);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = digest_of(&data);
    let mut tasks = Vec::new();
    for repo in ["one", "two", "one", "two", "three"] {
        let registry = registry.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            registry.push_blob(repo, &data).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), digest);
    }
    for repo in ["one", "two", "three"] {
        let get = registry
            .send(Method::GET, &format!("/v2/{repo}/blobs/{digest}"), &[], "")
            .await;
        assert_eq!(get.body.as_ref(), data.as_slice());
    }
    assert_eq!(walk_files(&registry.data_dir.join("blobs")).len(), 1);
    assert!(walk_files(&registry.data_dir.join("uploads")).is_empty());
}
