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

#[tokio::test]
async fn put_file_moves_a_matching_file_in_and_refuses_a_wrong_digest() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path().join("blobs"));
    let content = vec![7u8; 700 * 1024 + 3];
    let digest = sha256_hex(&content);

    let wrong = blobs.staging_path().await.unwrap();
    std::fs::write(&wrong, b"not the announced bytes").unwrap();
    let error = blobs.put_file(&wrong, &digest).await.unwrap_err();
    assert!(
        matches!(&error, BlobError::DigestMismatch { expected, actual } if *expected == digest && *actual == sha256_hex(b"not the announced bytes")),
        "{error:?}"
    );
    assert!(
        wrong.exists(),
        "a refused file stays for the caller to remove"
    );
    assert!(!blobs.contains(&digest).await.unwrap());

    let staged = blobs.staging_path().await.unwrap();
    assert_ne!(staged, wrong, "staging paths are fresh");
    std::fs::write(&staged, &content).unwrap();
    assert_eq!(blobs.put_file(&staged, &digest).await.unwrap(), digest);
    assert!(!staged.exists(), "the file moved into the store");
    assert_eq!(blobs.get(&digest).await.unwrap(), content);

    // The same content again: already stored, the new file is removed.
    let again = blobs.staging_path().await.unwrap();
    std::fs::write(&again, &content).unwrap();
    assert_eq!(blobs.put_file(&again, &digest).await.unwrap(), digest);
    assert!(!again.exists());

    let error = blobs.put_file(&again, "not-a-digest").await.unwrap_err();
    assert!(matches!(error, BlobError::InvalidDigest(_)), "{error:?}");
}

#[tokio::test]
async fn open_verified_streams_checked_content_and_detects_corruption() {
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path());
    let digest = blobs.put(b"artifact bytes").await.unwrap();
    let (mut file, size) = blobs.open_verified(&digest).await.unwrap();
    assert_eq!(size, 14);
    let mut read = Vec::new();
    file.read_to_end(&mut read).await.unwrap();
    assert_eq!(
        read, b"artifact bytes",
        "positioned at the start after checking"
    );

    std::fs::write(blobs.path_of(&digest).unwrap(), b"tampered").unwrap();
    let error = blobs.open_verified(&digest).await.unwrap_err();
    assert!(matches!(error, BlobError::Corrupt { .. }), "{error:?}");
    let missing = sha256_hex(b"never stored");
    let error = blobs.open_verified(&missing).await.unwrap_err();
    assert!(matches!(error, BlobError::NotFound(_)), "{error:?}");
}
