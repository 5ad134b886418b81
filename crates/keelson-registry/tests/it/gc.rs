//! Garbage collection on a real data directory: only unreferenced blobs go; dry run changes nothing.

use hyper::{Method, StatusCode};
use keelson_registry::{GcOptions, gc, gc_with};

use crate::support::{TestRegistry, digest_of, image_manifest};

#[tokio::test]
async fn gc_removes_only_unreferenced_blobs() {
    let registry = TestRegistry::start().await;
    let config = br#"{"os":"linux"}"#;
    let shared = b"shared layer";
    registry.push_blob("a", config).await;
    registry.push_blob("a", shared).await;
    registry.push_blob("b", config).await;
    registry.push_blob("b", shared).await;
    let orphan = registry
        .push_blob("a", b"uploaded but never referenced")
        .await;
    let only_b = registry.push_blob("b", b"layer only in b").await;
    registry
        .push_manifest("a", "v1", &image_manifest(config, &[shared]))
        .await;
    let b_put = registry
        .push_manifest(
            "b",
            "v1",
            &image_manifest(config, &[shared, b"layer only in b"]),
        )
        .await;
    assert_eq!(b_put.status, StatusCode::CREATED);
    let b_digest = b_put.header("docker-content-digest").to_owned();
    let artifact = registry
        .send(Method::PUT, "/artifacts/p/n/1/file", &[], "artifact bytes")
        .await;
    assert_eq!(artifact.status, StatusCode::CREATED);

    // Dry run: reports, removes nothing.
    let dry = gc(&registry.data_dir, true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.blobs_removed, vec![orphan.clone()]);
    assert_eq!(
        registry
            .send(Method::HEAD, &format!("/v2/a/blobs/{orphan}"), &[], "")
            .await
            .status,
        StatusCode::OK
    );

    let report = gc(&registry.data_dir, false).unwrap();
    assert_eq!(report.blobs_removed, vec![orphan.clone()]);
    assert_eq!(
        report.bytes_freed,
        b"uploaded but never referenced".len() as u64
    );
    assert_eq!(
        registry
            .send(Method::HEAD, &format!("/v2/a/blobs/{orphan}"), &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    for (repo, digest) in [
        ("a", digest_of(shared)),
        ("b", only_b.clone()),
        ("a", digest_of(config)),
    ] {
        assert_eq!(
            registry
                .send(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), &[], "")
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(
        registry
            .send(Method::GET, "/artifacts/p/n/1/file", &[], "")
            .await
            .body
            .as_ref(),
        b"artifact bytes"
    );

    // Untag b:v1 → its manifest is unreachable; its only-b layer goes, the shared one stays (a uses it).
    assert_eq!(
        registry
            .send(Method::DELETE, "/v2/b/manifests/v1", &[], "")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let report = gc(&registry.data_dir, false).unwrap();
    assert_eq!(
        report.manifests_removed,
        vec![("b".to_owned(), b_digest.clone())]
    );
    assert!(report.blobs_removed.contains(&only_b));
    assert!(report.blobs_removed.contains(&b_digest));
    assert!(!report.blobs_removed.contains(&digest_of(shared)));
    assert_eq!(
        registry
            .send(Method::GET, "/v2/a/manifests/v1", &[], "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        registry
            .send(Method::GET, &format!("/v2/b/manifests/{b_digest}"), &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Nothing left to collect.
    let again = gc_with(&registry.data_dir, &GcOptions::default()).unwrap();
    assert!(
        again.blobs_removed.is_empty() && again.manifests_removed.is_empty(),
        "{again:?}"
    );
}

#[tokio::test]
async fn gc_keeps_untagged_index_children_and_referrers_of_tagged_images() {
    let registry = TestRegistry::start().await;
    let config = br#"{}"#;
    registry.push_blob("app", config).await;
    let child = image_manifest(config, &[]);
    let child_bytes = serde_json::to_vec(&child).unwrap();
    let child_digest = digest_of(&child_bytes);
    registry.push_manifest("app", &child_digest, &child).await;
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child_digest, "size": child_bytes.len() }],
    });
    assert_eq!(
        registry.push_manifest("app", "latest", &index).await.status,
        StatusCode::CREATED
    );
    let mut referrer = image_manifest(config, &[]);
    referrer["artifactType"] = "application/vnd.example".into();
    referrer["subject"] = serde_json::json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child_digest, "size": child_bytes.len() });
    let referrer_digest = digest_of(&serde_json::to_vec(&referrer).unwrap());
    registry
        .push_manifest("app", &referrer_digest, &referrer)
        .await;

    let report = gc(&registry.data_dir, false).unwrap();
    assert!(report.manifests_removed.is_empty(), "{report:?}");
    assert!(report.blobs_removed.is_empty(), "{report:?}");
    assert_eq!(
        registry
            .send(
                Method::GET,
                &format!("/v2/app/manifests/{referrer_digest}"),
                &[],
                ""
            )
            .await
            .status,
        StatusCode::OK
    );

    // Untag the index: index, child and referrer all become garbage.
    registry
        .send(Method::DELETE, "/v2/app/manifests/latest", &[], "")
        .await;
    let report = gc(&registry.data_dir, false).unwrap();
    assert_eq!(report.manifests_removed.len(), 3, "{report:?}");
    assert!(report.blobs_removed.contains(&digest_of(config)));
}
