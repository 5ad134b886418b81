//! Opening a store from the locations users type.

use keelson_store::{BackendKind, Store, StoreError};

#[tokio::test]
async fn sqlite_url_and_plain_path_open_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.db");
    let by_url = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(by_url.backend_kind(), BackendKind::Sqlite);
    by_url
        .create_project("app", "/srv/git/app.git", 1)
        .await
        .unwrap();
    by_url.close().await;

    let by_path = Store::open(path.to_str().unwrap()).await.unwrap();
    let names: Vec<String> = by_path
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|project| project.name)
        .collect();
    assert_eq!(names, ["app"]);
}

#[tokio::test]
async fn unsupported_locations_are_rejected_with_the_location() {
    for location in ["mysql://localhost/keelson", "", "sqlite://"] {
        match Store::open(location).await {
            Err(StoreError::InvalidLocation {
                location: named, ..
            }) => assert_eq!(named, location),
            other => panic!("{location}: expected InvalidLocation, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_missing_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/data.db");
    let error = Store::open(path.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(error, StoreError::Database(_)), "{error:?}");
}
