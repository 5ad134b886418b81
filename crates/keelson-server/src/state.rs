//! What every handler shares: the store, the blob store, the repository cache, the secret box,
//! metrics, the wake-up for long-polling agents and the live event bus.

use std::sync::Arc;
use std::time::Duration;

use keelson_api::LogLineInfo;
use keelson_store::{BlobStore, Store};
use tokio::sync::{Notify, broadcast};

use crate::metrics::Metrics;
use crate::repo::RepoCache;
use crate::secretbox::SecretBox;

/// Settings that shape the server's behaviour (not where it listens).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// How often agents heartbeat.
    pub heartbeat_interval: Duration,
    /// Longest long-poll for a lease.
    pub max_lease_wait: Duration,
    /// How many times a job is leased before an expired lease fails it.
    pub max_attempts: u32,
    /// How often the reaper, the poller and the cron loop look.
    pub tick: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            lease_ttl: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(3),
            max_lease_wait: Duration::from_secs(30),
            max_attempts: 2,
            tick: Duration::from_secs(1),
        }
    }
}

/// A change worth telling live viewers about.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// A run's or one of its pipeline jobs' state changed.
    RunChanged {
        /// The run.
        run_id: i64,
    },
    /// Log lines of a run were stored.
    Log {
        /// The run.
        run_id: i64,
        /// The lines.
        lines: Arc<Vec<LogLineInfo>>,
    },
}

/// The shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    blobs: BlobStore,
    repos: RepoCache,
    secrets: SecretBox,
    csrf_key: [u8; 32],
    metrics: Metrics,
    work: Notify,
    live: broadcast::Sender<LiveEvent>,
    tuning: Tuning,
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        store: Store,
        blobs: BlobStore,
        repos: RepoCache,
        secrets: SecretBox,
        tuning: Tuning,
    ) -> AppState {
        let mut csrf_key = [0u8; 32];
        getrandom::fill(&mut csrf_key).expect("the operating system's random source works");
        let (live, _) = broadcast::channel(4096);
        AppState {
            inner: Arc::new(Inner {
                store,
                blobs,
                repos,
                secrets,
                csrf_key,
                metrics: Metrics::default(),
                work: Notify::new(),
                live,
                tuning,
            }),
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Archived logs and other blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// Mirrors of project repositories.
    pub fn repos(&self) -> &RepoCache {
        &self.inner.repos
    }

    /// Seals webhook secrets.
    pub fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }

    /// Key of the CSRF tokens (random per process: a restart ends CSRF tokens, not sessions;
    /// pages are re-rendered with the new token).
    pub fn csrf_key(&self) -> &[u8] {
        &self.inner.csrf_key
    }

    /// Counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Timing settings.
    pub fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }

    /// Wakes agents waiting for work.
    pub fn wake_agents(&self) {
        self.inner.work.notify_waiters();
    }

    /// Waits until [`AppState::wake_agents`] is called.
    pub fn work_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.work.notified()
    }

    /// Publishes a live event (dropped when nobody listens).
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.inner.live.send(event);
    }

    /// Whether anyone listens to live events (saves building events nobody reads).
    pub fn has_listeners(&self) -> bool {
        self.inner.live.receiver_count() > 0
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.live.subscribe()
    }

    /// The current time in Unix milliseconds.
    pub fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_millis() as i64)
            .unwrap_or(0)
    }
}
