//! One environment's service (a *slot*): its proxy, its replica sets by version, the traffic
//! policy, and the router that turns "which versions get what share" plus "which replicas are
//! ready" into the proxy's route table.
//!
//! Invariants:
//! - Only ready replicas are ever in the route table; a version with no ready replica is left
//!   out, so its share goes to the others instead of failing.
//! - A replica leaves the table (and the table is pushed) before it is drained, and is drained
//!   before it is stopped: in-flight requests finish, new ones go elsewhere.
//! - While a new version gets weighted traffic the proxy holds a lease naming the stable version;
//!   the router renews it. If this process dies the proxy falls back to stable by itself.
//! - A handed-over slot (detached, or moved to new addresses) never writes its state again: a
//!   router or rollout task still finishing its step cannot overwrite what the next owner of
//!   the slot directory reads or writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use keelson_pipeline::deploy::{EnvironmentSpec, RouteRule};
use tokio::sync::{Mutex, Notify};

use super::state::{SetState, SlotFiles, SlotState};
use crate::proxy::{Backend, Fallback, ProxyControl, RouteTable, RuleRoute, VersionRoute};
use crate::target::{ReplicaRecord, Supervised, Target};

/// How long the proxy keeps a canary split without hearing from the controller.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the router looks at replica readiness.
const ROUTER_TICK: Duration = Duration::from_millis(100);
/// How often the lease is renewed when nothing else changed.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// A version's share of weighted traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// A fixed weight (canary percentages).
    Fixed(u32),
    /// One unit per ready replica (rolling updates: traffic spreads evenly over replicas).
    PerReplica,
}

/// What the strategy wants the traffic to look like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub versions: Vec<(String, Share)>,
    pub rules: Vec<(RouteRule, String)>,
    pub sticky_cookie: Option<String>,
    pub preview: Option<String>,
    /// The version the proxy falls back to if the controller goes quiet.
    pub fallback: Option<String>,
}

impl Policy {
    /// Everything to one version.
    pub fn only(version: &str) -> Policy {
        Policy {
            versions: vec![(version.to_string(), Share::PerReplica)],
            ..Policy::default()
        }
    }
}

/// A supervised replica and its index in its set.
pub struct Member {
    pub index: u32,
    pub replica: Supervised,
}

/// The live parts of a slot.
pub struct Slot {
    pub environment: String,
    pub service: String,
    pub files: SlotFiles,
    pub target: Arc<dyn Target>,
    pub proxy: Arc<dyn ProxyControl>,
    /// What is persisted; the router refreshes replica records in it.
    pub state: StdMutex<SlotState>,
    pub policy: StdMutex<Policy>,
    pub sets: Mutex<BTreeMap<String, Vec<Member>>>,
    /// The table last pushed to the proxy (serialises pushes).
    pushed: Mutex<Option<RouteTable>>,
    pub changed: Notify,
    /// Set by [`Slot::hand_over`]; checked under the `state` lock before every save.
    retired: AtomicBool,
}

impl Slot {
    pub fn new(
        files: SlotFiles,
        target: Arc<dyn Target>,
        proxy: Arc<dyn ProxyControl>,
        state: SlotState,
    ) -> Slot {
        Slot {
            environment: state.environment.clone(),
            service: state.service.clone(),
            files,
            target,
            proxy,
            state: StdMutex::new(state),
            policy: StdMutex::new(Policy::default()),
            sets: Mutex::new(BTreeMap::new()),
            pushed: Mutex::new(None),
            changed: Notify::new(),
            retired: AtomicBool::new(false),
        }
    }

    pub fn environment_spec(&self) -> EnvironmentSpec {
        self.state.lock().unwrap().environment_spec.clone()
    }

    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap() = policy;
    }

    pub fn policy(&self) -> Policy {
        self.policy.lock().unwrap().clone()
    }

    /// Ready replicas of `version` (what the proxy may route to).
    pub async fn ready_count(&self, version: &str) -> usize {
        let sets = self.sets.lock().await;
        sets.get(version)
            .map(|members| members.iter().filter(|m| m.replica.state().ready).count())
            .unwrap_or(0)
    }

    /// The route table for the current policy and readiness.
    async fn table(&self) -> RouteTable {
        let policy = self.policy();
        let sets = self.sets.lock().await;
        let backends_of = |version: &str| -> Vec<Backend> {
            sets.get(version)
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let state = m.replica.state();
                    let record = state.record.filter(|_| state.ready)?;
                    Some(Backend {
                        id: record.id,
                        addr: record.addr,
                    })
                })
                .collect()
        };
        let mut versions = Vec::new();
        for (version, share) in &policy.versions {
            let backends = backends_of(version);
            if backends.is_empty() {
                continue;
            }
            let weight = match share {
                Share::Fixed(w) => *w,
                Share::PerReplica => backends.len() as u32,
            };
            versions.push(VersionRoute {
                version: version.clone(),
                weight,
                backends,
            });
        }
        // Versions reachable only by rule or preview still need their backends in the table.
        let extra: Vec<&String> = policy
            .rules
            .iter()
            .map(|(_, v)| v)
            .chain(policy.preview.iter())
            .collect();
        for version in extra {
            if versions.iter().any(|v| &v.version == version) {
                continue;
            }
            let backends = backends_of(version);
            if !backends.is_empty() {
                versions.push(VersionRoute {
                    version: version.clone(),
                    weight: 0,
                    backends,
                });
            }
        }
        let present = |v: &String| versions.iter().any(|r| &r.version == v);
        let rules = policy
            .rules
            .iter()
            .filter(|(_, v)| present(v))
            .map(|(rule, v)| RuleRoute {
                rule: rule.clone(),
                version: v.clone(),
            })
            .collect();
        let weighted_versions = versions.iter().filter(|v| v.weight > 0).count();
        let fallback = policy
            .fallback
            .as_ref()
            .filter(|v| present(v) && (weighted_versions > 1 || !policy.rules.is_empty()))
            .map(|v| Fallback {
                version: v.clone(),
                lease: LEASE,
            });
        // Each version's connection cap comes from the service spec it was released with.
        let max_connections = {
            let state = self.state.lock().unwrap();
            state
                .stable
                .iter()
                .chain(state.rollout.iter().map(|rollout| &rollout.new))
                .filter(|set| present(&set.release.version))
                .filter_map(|set| {
                    let max = set.release.service.max_connections?;
                    Some((set.release.version.clone(), max))
                })
                .collect()
        };
        RouteTable {
            sticky_cookie: policy.sticky_cookie.clone(),
            preview: policy.preview.clone().filter(|v| present(v)),
            rules,
            fallback,
            versions,
            max_connections,
        }
    }

    /// Pushes the table now if it changed; renews the lease otherwise when `renew`.
    pub async fn sync(&self, renew: bool) -> Result<(), crate::proxy::ProxyError> {
        let table = self.table().await;
        let mut pushed = self.pushed.lock().await;
        if pushed.as_ref() != Some(&table) {
            self.proxy.set_routes(table.clone()).await?;
            *pushed = Some(table);
        } else if renew && table.fallback.is_some() {
            self.proxy.renew_lease().await?;
        }
        Ok(())
    }

    /// Forgets what was pushed, so the next sync pushes again (after a proxy restart).
    pub async fn invalidate(&self) {
        *self.pushed.lock().await = None;
    }

    /// Adds a supervised replica to `version`'s set.
    pub async fn add(&self, version: &str, member: Member) {
        self.sets
            .lock()
            .await
            .entry(version.to_string())
            .or_default()
            .push(member);
        self.changed.notify_waiters();
    }

    /// Takes one replica of `version` out of rotation, drains it and stops it. Returns false
    /// when the version has none left.
    pub async fn retire_one(&self, version: &str, drain: Duration) -> bool {
        let member = {
            let mut sets = self.sets.lock().await;
            let Some(members) = sets.get_mut(version) else {
                return false;
            };
            // Prefer one that is not serving (not ready) and the highest index.
            let pick = members
                .iter()
                .enumerate()
                .max_by_key(|(_, m)| (!m.replica.state().ready, m.index))
                .map(|(i, _)| i);
            let Some(i) = pick else { return false };
            let member = members.remove(i);
            if members.is_empty() {
                sets.remove(version);
            }
            member
        };
        self.retire(vec![member], drain).await;
        true
    }

    /// Takes every replica of `version` out of rotation, drains and stops them.
    pub async fn retire_all(&self, version: &str, drain: Duration) {
        let members = self.sets.lock().await.remove(version).unwrap_or_default();
        self.retire(members, drain).await;
    }

    async fn retire(&self, members: Vec<Member>, drain: Duration) {
        if members.is_empty() {
            return;
        }
        if let Err(e) = self.sync(false).await {
            tracing::warn!(slot = %self.files.dir().display(), error = %e, "cannot update the proxy before draining");
        }
        let ids: Vec<String> = members
            .iter()
            .filter_map(|m| m.replica.state().record.map(|r| r.id))
            .collect();
        if !ids.is_empty() {
            match self.proxy.drain(ids, drain).await {
                Ok(report) if report.still_in_flight > 0 => tracing::warn!(
                    in_flight = report.still_in_flight,
                    "drain timed out; stopping anyway"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot drain"),
            }
        }
        let stops = members.into_iter().map(|m| m.replica.stop());
        for result in futures_util::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "stopping a replica failed");
            }
        }
        self.changed.notify_waiters();
        self.persist_records().await;
    }

    /// Hands the slot over: saves the current replica records, then marks the slot retired (it
    /// never saves its state again, whatever task still holds it) and takes its replica sets
    /// out. Returns the state as saved, with the records, and the sets (still supervised: the
    /// caller detaches or stops them).
    pub async fn hand_over(&self) -> (SlotState, BTreeMap<String, Vec<Member>>) {
        self.persist_records().await;
        let state = {
            let state = self.state.lock().unwrap();
            self.retired.store(true, Ordering::SeqCst);
            state.clone()
        };
        let sets = std::mem::take(&mut *self.sets.lock().await);
        (state, sets)
    }

    /// Copies the current replica records of each set into the persisted state and saves it if
    /// anything changed.
    pub async fn persist_records(&self) {
        let records: BTreeMap<String, Vec<(u32, Option<ReplicaRecord>)>> = {
            let sets = self.sets.lock().await;
            sets.iter()
                .map(|(v, members)| {
                    (
                        v.clone(),
                        members
                            .iter()
                            .map(|m| (m.index, m.replica.state().record))
                            .collect(),
                    )
                })
                .collect()
        };
        let mut state = self.state.lock().unwrap();
        if self.retired.load(Ordering::SeqCst) {
            return;
        }
        let before = state.clone();
        let apply = |set: &mut SetState| {
            if let Some(members) = records.get(&set.release.version) {
                let len = members
                    .iter()
                    .map(|(i, _)| *i as usize + 1)
                    .max()
                    .unwrap_or(0);
                let mut replicas = vec![None; len];
                for (i, record) in members {
                    replicas[*i as usize] = record.clone();
                }
                set.replicas = replicas;
            } else {
                set.replicas.clear();
            }
        };
        if let Some(stable) = state.stable.as_mut() {
            apply(stable);
        }
        if let Some(rollout) = state.rollout.as_mut() {
            apply(&mut rollout.new);
        }
        if *state != before
            && let Err(e) = self.files.save(&state)
        {
            tracing::error!(error = %e, "cannot save deployment state");
        }
    }

    /// Saves the state after `edit`.
    pub fn update_state(&self, edit: impl FnOnce(&mut SlotState)) {
        let mut state = self.state.lock().unwrap();
        edit(&mut state);
        if !self.retired.load(Ordering::SeqCst)
            && let Err(e) = self.files.save(&state)
        {
            tracing::error!(error = %e, "cannot save deployment state");
        }
    }

    /// Keeps the proxy in step with readiness and renews the lease, until `stop` fires.
    pub async fn route_forever(self: Arc<Self>, stop: Arc<Notify>) {
        let mut since_renew = Duration::ZERO;
        loop {
            tokio::select! {
                _ = stop.notified() => return,
                _ = tokio::time::sleep(ROUTER_TICK) => {}
                _ = self.changed.notified() => {}
            }
            since_renew += ROUTER_TICK;
            let renew = since_renew >= RENEW_EVERY;
            if renew {
                since_renew = Duration::ZERO;
            }
            if let Err(e) = self.sync(renew).await {
                tracing::warn!(environment = %self.environment, service = %self.service, error = %e, "cannot update the proxy");
                self.invalidate().await;
            }
            // Every tick (it writes only when a record changed), so a replica started just
            // before a crash is in the state the next controller adopts from.
            self.persist_records().await;
        }
    }
}
