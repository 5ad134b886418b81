//! Generic artifacts over HTTP: put/get/head, checksums, listings, delete, retention, hostile paths.

use hyper::{Method, StatusCode};
use keelson_registry::{RetentionPolicy, RetentionRule};

use crate::support::{TestRegistry, digest_of};

#[tokio::test]
async fn put_get_head_list_and_delete() {
    let registry = TestRegistry::start().await;
    let data = vec![42u8; 1_000_000];
    let sha = digest_of(&data).trim_start_matches("sha256:").to_owned();
    let put = registry
        .send(
            Method::PUT,
            "/artifacts/web/site/1.0.0/site.tar.gz",
            &[("x-checksum-sha256", &sha)],
            data.clone(),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    assert_eq!(put.header("x-checksum-sha256"), sha);

    let get = registry
        .send(
            Method::GET,
            "/artifacts/web/site/1.0.0/site.tar.gz",
            &[],
            "",
        )
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.body.as_ref(), data.as_slice());
    assert_eq!(get.header("x-checksum-sha256"), sha);
    let head = registry
        .send(
            Method::HEAD,
            "/artifacts/web/site/1.0.0/site.tar.gz",
            &[],
            "",
        )
        .await;
    assert_eq!(head.header("content-length"), "1000000");
    assert!(head.body.is_empty());

    registry
        .send(
            Method::PUT,
            "/artifacts/web/site/1.0.0/notes.txt",
            &[],
            "notes",
        )
        .await;
    let list = registry
        .send(Method::GET, "/artifacts/web/site/", &[], "")
        .await
        .json();
    assert_eq!(list["versions"][0]["version"], "1.0.0");
    let files = list["versions"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[1]["name"], "site.tar.gz");
    assert_eq!(files[1]["sha256"], sha.as_str());

    assert_eq!(
        registry
            .send(
                Method::DELETE,
                "/artifacts/web/site/1.0.0/site.tar.gz",
                &[],
                ""
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        registry
            .send(
                Method::GET,
                "/artifacts/web/site/1.0.0/site.tar.gz",
                &[],
                ""
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        registry
            .send(Method::DELETE, "/artifacts/web/site/1.0.0/", &[], "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        registry
            .send(Method::GET, "/artifacts/web/site/", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn checksum_mismatch_is_rejected_and_nothing_is_stored() {
    let registry = TestRegistry::start().await;
    let wrong = "0".repeat(64);
    let put = registry
        .send(
            Method::PUT,
            "/artifacts/p/n/1/f.bin",
            &[("x-checksum-sha256", &wrong)],
            "content",
        )
        .await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST);
    assert_eq!(put.error_code(), "DIGEST_INVALID");
    assert_eq!(
        registry
            .send(Method::GET, "/artifacts/p/n/1/f.bin", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(crate::oci::walk_files(&registry.data_dir.join("blobs")).is_empty());
    let malformed = registry
        .send(
            Method::PUT,
            "/artifacts/p/n/1/f.bin",
            &[("x-checksum-sha256", "zz")],
            "content",
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn retention_by_age_removes_versions_older_than_the_limit() {
    let registry = TestRegistry::start_with(|config| {
        config.retention.default = RetentionPolicy {
            keep_last: None,
            max_age_secs: Some(1),
        };
    })
    .await;
    let put = |version: &'static str| {
        let registry = &registry;
        async move {
            registry
                .send(
                    Method::PUT,
                    &format!("/artifacts/p/aged/{version}/bin"),
                    &[],
                    version.to_owned(),
                )
                .await
                .status
        }
    };
    assert_eq!(put("old").await, StatusCode::CREATED);
    // Creation times have one-second resolution: wait until "old" is clearly past the limit.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(put("new").await, StatusCode::CREATED);
    let listed = registry
        .send(Method::GET, "/artifacts/p/aged/", &[], "")
        .await
        .json();
    let versions: Vec<&str> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["new"], "{listed}");
    assert_eq!(
        registry
            .send(Method::GET, "/artifacts/p/aged/old/bin", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_versions_after_each_put() {
    let registry = TestRegistry::start_with(|config| {
        config.retention.default = RetentionPolicy {
            keep_last: Some(2),
            max_age_secs: None,
        };
        config.retention.rules.push(RetentionRule {
            project: "keep".into(),
            name: None,
            policy: RetentionPolicy::default(),
        });
    })
    .await;
    for version in ["1", "2", "3"] {
        for project in ["p", "keep"] {
            let put = registry
                .send(
                    Method::PUT,
                    &format!("/artifacts/{project}/tool/{version}/bin"),
                    &[],
                    version.to_owned(),
                )
                .await;
            assert_eq!(put.status, StatusCode::CREATED);
        }
        // Creation times have one-second resolution; ties are broken by version name.
    }
    let versions = |list: serde_json::Value| -> Vec<String> {
        list["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        versions(
            registry
                .send(Method::GET, "/artifacts/p/tool/", &[], "")
                .await
                .json()
        ),
        ["3", "2"]
    );
    assert_eq!(
        versions(
            registry
                .send(Method::GET, "/artifacts/keep/tool/", &[], "")
                .await
                .json()
        ),
        ["3", "2", "1"]
    );
    assert_eq!(
        registry
            .send(Method::GET, "/artifacts/p/tool/1/bin", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn hostile_artifact_paths_are_rejected() {
    let registry = TestRegistry::start().await;
    for path in [
        "/artifacts/p/n/../../../etc/passwd",
        "/artifacts/p/n/1/..",
        "/artifacts/p/n/1/%2e%2e",
        "/artifacts/p/n/1/a%2Fb",
        "/artifacts/p/n/1/.hidden",
        "/artifacts/p/n/1/_version.json",
        "/artifacts/p/n/1/f/extra",
        "/artifacts/p/n/1/a%00b",
        "/artifacts/p",
    ] {
        let reply = registry.send(Method::PUT, path, &[], "x").await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {:?}",
            reply.body
        );
        assert_eq!(reply.error_code(), "PATH_INVALID", "{path}");
    }
    let escape = registry
        .send(
            Method::GET,
            "/artifacts/p/n/1/..%2F..%2F..%2Fretention.json",
            &[],
            "",
        )
        .await;
    assert_eq!(escape.status, StatusCode::BAD_REQUEST);
}
