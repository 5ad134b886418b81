//! The content-addressed blob store.

use keelson_store::{BlobError, BlobStore, sha256_hex};

#[tokio::test]
async fn put_returns_the_sha256_and_get_returns_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path().join("blobs"));
    let digest = blobs.put(b"hello world").await.unwrap();
    assert_eq!(
        digest,
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert_eq!(blobs.get(&digest).await.unwrap(), b"hello world");
    assert!(blobs.contains(&digest).await.unwrap());
    assert_eq!(
        blobs.put(b"hello world").await.unwrap(),
        digest,
        "same bytes, same blob"
    );
    let empty = blobs.put(b"").await.unwrap();
    assert_eq!(blobs.get(&empty).await.unwrap(), b"");
    let leftovers = std::fs::read_dir(dir.path().join("blobs/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no temporary files are left behind");
}

#[tokio::test]
async fn get_detects_corrupt_content() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path());
    let digest = blobs.put(b"original").await.unwrap();
    std::fs::write(blobs.path_of(&digest).unwrap(), b"tampered").unwrap();
    match blobs.get(&digest).await {
        Err(BlobError::Corrupt {
            digest: name,
            actual,
        }) => {
            assert_eq!(name, digest);
            assert_eq!(actual, sha256_hex(b"tampered"));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn put_expecting_rejects_a_wrong_digest_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path());
    let wrong = sha256_hex(b"something else");
    let error = blobs.put_expecting(b"payload", &wrong).await.unwrap_err();
    assert!(
        matches!(&error, BlobError::DigestMismatch { expected, actual } if *expected == wrong && *actual == sha256_hex(b"payload")),
        "{error:?}"
    );
    assert!(!blobs.contains(&sha256_hex(b"payload")).await.unwrap());
    let right = sha256_hex(b"payload");
    assert_eq!(
        blobs.put_expecting(b"payload", &right).await.unwrap(),
        right
    );
    assert_eq!(blobs.get(&right).await.unwrap(), b"payload");
}

#[tokio::test]
async fn malformed_and_missing_digests_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path());
    for bad in [
        "",
        "../../etc/passwd",
        &"A".repeat(64),
        &"a".repeat(63),
        &"g".repeat(64),
    ] {
        let error = blobs.get(bad).await.unwrap_err();
        assert!(
            matches!(error, BlobError::InvalidDigest(_)),
            "{bad}: {error:?}"
        );
    }
    let absent = sha256_hex(b"never stored");
    let error = blobs.get(&absent).await.unwrap_err();
    assert!(
        matches!(&error, BlobError::NotFound(name) if *name == absent),
        "{error:?}"
    );
}
