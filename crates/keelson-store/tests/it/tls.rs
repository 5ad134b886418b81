//! PostgreSQL over TLS: `sslmode=require` really encrypts, `verify-full` with the server's own
//! certificate as root works, and a bad TLS setup fails with a [`StoreError::Connect`] that names
//! the cause and never the password.
//!
//! Like the contract suite, these tests need `KEELSON_TEST_POSTGRES_URL`; they also need the
//! server to have `ssl = on`. Without either they are skipped with a printed reason, except in CI
//! (`CI` set), where they fail.

use keelson_store::{Store, StoreError};
use sqlx::Connection;

use crate::support::{TestDb, postgres_admin_url, with_parameter};

/// The test server's URL when it has TLS on; `None` (after printing why) otherwise.
#[allow(clippy::print_stderr)]
async fn tls_server(test_name: &str) -> Option<String> {
    let admin_url = postgres_admin_url(test_name)?;
    let mut connection =
        sqlx::PgConnection::connect(&with_parameter(&admin_url, "sslmode=disable"))
            .await
            .expect("connect to the PostgreSQL test server without TLS");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut connection)
        .await
        .expect("SHOW ssl");
    connection.close().await.expect("close");
    if ssl != "on" {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the PostgreSQL test server has `ssl = {ssl}`: CI must provide a server \
             with TLS on (Debian's cluster has `ssl = on` with the snakeoil certificate)"
        );
        eprintln!("skipping `{test_name}`: the PostgreSQL test server has `ssl = {ssl}`");
        return None;
    }
    Some(admin_url)
}

#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let Some(_) = tls_server("sslmode_require_connects_over_tls").await else {
        return;
    };
    let db = TestDb::postgres("sslmode_require_connects_over_tls")
        .await
        .expect("server configured");
    let url = with_parameter(&db.location(), "sslmode=require");
    let store = Store::open(&url).await.expect("open over TLS");
    store
        .create_project("app", "/srv/git/app.git", 1)
        .await
        .expect("write over TLS");
    store.close().await;

    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    connection.close().await.unwrap();
    assert!(encrypted, "the server sees this connection as TLS");
    db.cleanup().await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_a_clear_connect_error() {
    let Some(admin_url) =
        tls_server("a_certificate_from_an_unknown_ca_is_a_clear_connect_error").await
    else {
        return;
    };
    // The public web's CAs did not sign the test server's certificate.
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let url = with_parameter(
        &admin_url,
        &format!("sslmode=verify-full&sslrootcert={bundle}"),
    );
    let error = Store::open(&url).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    assert!(
        message.contains("certificate") || message.contains("Certificate"),
        "the cause is named: {message}"
    );
    assert!(
        message.contains("sslrootcert"),
        "the hint is given: {message}"
    );
    assert_password_hidden(&admin_url, &message);

    let missing = with_parameter(
        &admin_url,
        "sslmode=verify-full&sslrootcert=/nonexistent/keelson-ca.pem",
    );
    let error = Store::open(&missing).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, StoreError::InvalidLocation { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("sslrootcert `/nonexistent/keelson-ca.pem` cannot be read"),
        "the missing file is named: {message}"
    );
    assert_password_hidden(&admin_url, &message);
}

/// With the server's own (self-signed) certificate as the root, `verify-full` works when the
/// URL names the host in the certificate and fails when it does not.
#[tokio::test]
#[allow(clippy::print_stderr)]
async fn verify_full_checks_the_host_name() {
    let test_name = "verify_full_checks_the_host_name";
    let Some(admin_url) = tls_server(test_name).await else {
        return;
    };
    let mut connection = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let certificate_file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    let certificate = std::fs::read_to_string(&certificate_file).unwrap_or_default();
    if !certificate.contains("BEGIN CERTIFICATE") || !admin_url.contains("@127.0.0.1") {
        eprintln!(
            "skipping `{test_name}`: needs the server certificate `{certificate_file}` readable \
             and a test URL naming 127.0.0.1"
        );
        return;
    }
    let subject_names_localhost = openssl_names(&certificate_file).contains("localhost");
    if !subject_names_localhost {
        eprintln!("skipping `{test_name}`: `{certificate_file}` does not name localhost");
        return;
    }
    // The store's schema goes into a database of this test's own, never the admin database.
    let db = TestDb::postgres(test_name)
        .await
        .expect("server configured");
    let location = db.location();
    let root = format!("sslmode=verify-full&sslrootcert={certificate_file}");
    let by_name = with_parameter(&location.replace("@127.0.0.1", "@localhost"), &root);
    let store = Store::open(&by_name)
        .await
        .expect("verify-full succeeds for the host the certificate names");
    store.close().await;

    let by_address = with_parameter(&location, &root);
    let error = Store::open(&by_address).await.unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    assert_password_hidden(&admin_url, &error.to_string());
}

/// The names (subject and alternative names) in a PEM certificate, as `openssl` prints them.
fn openssl_names(certificate_file: &str) -> String {
    std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(certificate_file)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

fn assert_password_hidden(url: &str, message: &str) {
    let authority = url.split("://").nth(1).unwrap_or_default();
    let userinfo = authority.split('@').next().unwrap_or_default();
    if let Some((_, password)) = userinfo.split_once(':') {
        assert!(
            !message.contains(&format!(":{password}@")),
            "the password leaked: {message}"
        );
    }
}
