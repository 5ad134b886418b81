//! The built binary stops cleanly on SIGTERM: a request in flight (slowed by `HELLO_DELAY_MS`)
//! is still answered, and the process exits 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let dir = std::env::temp_dir().join(format!("hello-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello-service"))
        .env("HELLO_ADDR", "127.0.0.1:0")
        .env("HELLO_ADDR_FILE", &addr_file)
        .env("HELLO_DELAY_MS", "700")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            if text.ends_with('\n') {
                break text.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "the service did not start");
        thread::sleep(Duration::from_millis(20));
    };

    let request = thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    });
    // Let the request reach the server, then ask it to stop while the answer is delayed.
    thread::sleep(Duration::from_millis(250));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let answer = request.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
