//! Graceful shutdown on SIGTERM and SIGINT without dependencies: a tiny signal handler sets a
//! flag, and a watcher thread turns the flag into [`Stopper::stop`]. The server then stops
//! accepting, answers the requests in flight (with `Connection: close`) and exits 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::server::Stopper;

/// Set by the signal handler; read by the watcher thread.
static TERMINATE: AtomicBool = AtomicBool::new(false);

/// How often the watcher thread looks at the flag.
const POLL: Duration = Duration::from_millis(50);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    /// The C library's `signal` (BSD semantics on Linux: the handler stays installed and
    /// interrupted system calls restart).
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// Only stores to an atomic: async-signal-safe.
extern "C" fn on_signal(_signum: i32) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Installs the handlers and starts the watcher thread, which calls `stopper.stop()` once
/// SIGTERM or SIGINT arrives.
pub fn stop_on_terminate(stopper: Stopper) -> std::io::Result<()> {
    for signum in [SIGTERM, SIGINT] {
        // SAFETY: `on_signal` is a valid `extern "C" fn(i32)` that only touches an atomic.
        let previous = unsafe { signal(signum, on_signal) };
        // SIG_ERR is -1.
        if previous == usize::MAX {
            return Err(std::io::Error::last_os_error());
        }
    }
    thread::Builder::new()
        .name("signal-watcher".into())
        .spawn(move || {
            while !TERMINATE.load(Ordering::SeqCst) {
                thread::sleep(POLL);
            }
            eprintln!("hello-service: stopping (signal received); finishing requests in flight");
            stopper.stop();
        })?;
    Ok(())
}
