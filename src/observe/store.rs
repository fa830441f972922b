//! The in-memory view of every observed container: last inspection, recent history, and what
//! the events told that an inspection cannot (manual stops, restarts, OOM kills).

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::analyze::UsagePoint;
use crate::docker::{ContainerInfo, ContainerState, DockerEvent, EventAction, HealthStatus};
use crate::respond::acting::Acting;

/// How many usage samples are kept per container (at 10 s, a little over an hour).
pub const USAGE_RETAINED: usize = 400;
/// How many restart instants are kept per container.
pub const RESTARTS_RETAINED: usize = 64;

/// What is known of one container.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    /// The last inspection.
    pub info: ContainerInfo,
    /// Usage samples, oldest first.
    pub usage: VecDeque<UsagePoint>,
    /// Instants at which it started again after having run, oldest first.
    pub restarts: VecDeque<DateTime<Utc>>,
    /// A person stopped or killed it, and nobody started it since.
    pub manual_stop: bool,
    /// Unhealthy without interruption since.
    pub unhealthy_since: Option<DateTime<Utc>>,
    /// An `oom` event arrived since it last started.
    pub oom_seen: bool,
    /// When it was last seen in a list or inspection.
    pub seen_at: DateTime<Utc>,
}

impl Observed {
    fn new(info: ContainerInfo, now: DateTime<Utc>) -> Self {
        // Without an event to tell, an exit by SIGTERM/SIGKILL that was not an OOM kill is what
        // `docker stop` and `docker kill` leave: taken as a person's doing, never repaired.
        let manual_stop = matches!(info.state, ContainerState::Exited | ContainerState::Dead)
            && !info.oom_killed
            && info
                .exit_code
                .is_some_and(|c| crate::analyze::probes::SIGNAL_EXIT_CODES.contains(&c));
        let unhealthy_since = (info.health == HealthStatus::Unhealthy).then_some(now);
        Self {
            info,
            usage: VecDeque::new(),
            restarts: VecDeque::new(),
            manual_stop,
            unhealthy_since,
            oom_seen: false,
            seen_at: now,
        }
    }
}

/// Every observed container, by id.
#[derive(Debug, Default)]
pub struct ObservedStore {
    /// A std lock: held for map updates only, never across an await.
    containers: RwLock<HashMap<String, Observed>>,
}

impl ObservedStore {
    /// A copy of one container's view.
    pub fn get(&self, id: &str) -> Option<Observed> {
        self.containers.read().expect("store lock").get(id).cloned()
    }

    /// A copy of the view of the container named `name` (without the leading `/`).
    pub fn find_by_name(&self, name: &str) -> Option<Observed> {
        self.containers
            .read()
            .expect("store lock")
            .values()
            .find(|o| o.info.name == name)
            .cloned()
    }

    /// Copies of every view.
    pub fn all(&self) -> Vec<Observed> {
        let mut all: Vec<Observed> = self
            .containers
            .read()
            .expect("store lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        all
    }

    /// Ids of running containers.
    pub fn running_ids(&self) -> Vec<String> {
        self.containers
            .read()
            .expect("store lock")
            .values()
            .filter(|o| o.info.state == ContainerState::Running)
            .map(|o| o.info.id.clone())
            .collect()
    }

    /// How many containers are known.
    pub fn len(&self) -> usize {
        self.containers.read().expect("store lock").len()
    }

    /// True when none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes in a fresh inspection, keeping the history.
    pub fn upsert(&self, info: ContainerInfo, now: DateTime<Utc>) {
        let mut map = self.containers.write().expect("store lock");
        match map.get_mut(&info.id) {
            None => {
                map.insert(info.id.clone(), Observed::new(info, now));
            }
            Some(o) => {
                // Docker's own restarts (restart policy) show as a growing RestartCount.
                let grown = info.restart_count.saturating_sub(o.info.restart_count);
                for _ in 0..grown.min(RESTARTS_RETAINED as u64) {
                    push_capped(&mut o.restarts, now, RESTARTS_RETAINED);
                }
                match info.health {
                    HealthStatus::Unhealthy => {
                        o.unhealthy_since.get_or_insert(now);
                    }
                    _ => o.unhealthy_since = None,
                }
                if info.state == ContainerState::Running && o.info.state != ContainerState::Running
                {
                    o.oom_seen = false;
                }
                o.info = info;
                o.seen_at = now;
            }
        }
    }

    /// Replaces the set of known containers with a full list: containers no longer listed are
    /// forgotten. Returns the ids that were forgotten.
    pub fn replace_all(&self, list: Vec<ContainerInfo>, now: DateTime<Utc>) -> Vec<String> {
        let ids: std::collections::HashSet<String> = list.iter().map(|c| c.id.clone()).collect();
        for info in list {
            self.upsert(info, now);
        }
        let mut map = self.containers.write().expect("store lock");
        let gone: Vec<String> = map
            .keys()
            .filter(|id| !ids.contains(*id))
            .cloned()
            .collect();
        for id in &gone {
            map.remove(id);
        }
        gone
    }

    /// Forgets a container.
    pub fn remove(&self, id: &str) {
        self.containers.write().expect("store lock").remove(id);
    }

    /// Records what an event tells beyond an inspection. `acting` says which containers
    /// HemoStat itself is acting on: their stops and kills are not manual.
    pub fn apply_event(&self, event: &DockerEvent, acting: &Acting) {
        let mut map = self.containers.write().expect("store lock");
        let Some(o) = map.get_mut(&event.container_id) else {
            return;
        };
        let ours = acting.is_ours(&event.container_id);
        match &event.action {
            EventAction::Kill | EventAction::Stop if !ours => o.manual_stop = true,
            EventAction::Start => {
                if o.info.started_at.is_some() || o.info.finished_at.is_some() {
                    push_capped(&mut o.restarts, event.time, RESTARTS_RETAINED);
                }
                o.manual_stop = false;
                o.oom_seen = false;
            }
            EventAction::Oom => o.oom_seen = true,
            EventAction::HealthStatus(HealthStatus::Unhealthy) => {
                o.unhealthy_since.get_or_insert(event.time);
            }
            EventAction::HealthStatus(_) => o.unhealthy_since = None,
            _ => {}
        }
    }

    /// Appends a usage sample.
    pub fn push_usage(&self, id: &str, point: UsagePoint) {
        if let Some(o) = self.containers.write().expect("store lock").get_mut(id) {
            push_capped(&mut o.usage, point, USAGE_RETAINED);
        }
    }
}

fn push_capped<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    queue.push_back(item);
    while queue.len() > cap {
        queue.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::docker::ResourceLimits;

    fn info(state: ContainerState, exit_code: Option<i64>) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            name: "web".into(),
            image: "img".into(),
            labels: BTreeMap::new(),
            state,
            exit_code,
            oom_killed: false,
            health: HealthStatus::None,
            health_failing_streak: 0,
            health_output: None,
            restart_count: 0,
            started_at: Some(Utc::now()),
            finished_at: None,
            limits: ResourceLimits::default(),
            pid: None,
        }
    }

    fn event(action: EventAction) -> DockerEvent {
        DockerEvent {
            action,
            container_id: "c1".into(),
            name: "web".into(),
            labels: BTreeMap::new(),
            time: Utc::now(),
            exit_code: None,
            signal: None,
        }
    }

    #[test]
    fn a_stop_by_a_person_is_manual_until_someone_starts_it() {
        let store = ObservedStore::default();
        let acting = Acting::default();
        store.upsert(info(ContainerState::Running, None), Utc::now());
        store.apply_event(&event(EventAction::Kill), &acting);
        assert!(store.get("c1").unwrap().manual_stop);
        store.apply_event(&event(EventAction::Start), &acting);
        assert!(!store.get("c1").unwrap().manual_stop);
    }

    #[test]
    fn a_stop_by_hemostat_is_not_manual() {
        let store = ObservedStore::default();
        let acting = Acting::default();
        store.upsert(info(ContainerState::Running, None), Utc::now());
        let _guard = acting.begin("c1");
        store.apply_event(&event(EventAction::Stop), &acting);
        assert!(!store.get("c1").unwrap().manual_stop);
    }

    #[test]
    fn without_events_a_signal_exit_is_taken_as_manual_and_a_crash_is_not() {
        let store = ObservedStore::default();
        store.upsert(info(ContainerState::Exited, Some(143)), Utc::now());
        assert!(store.get("c1").unwrap().manual_stop);
        let crashed = ObservedStore::default();
        crashed.upsert(info(ContainerState::Exited, Some(1)), Utc::now());
        assert!(!crashed.get("c1").unwrap().manual_stop);
    }

    #[test]
    fn restarts_are_counted_from_start_events_and_the_restart_count() {
        let store = ObservedStore::default();
        let acting = Acting::default();
        store.upsert(info(ContainerState::Running, None), Utc::now());
        store.apply_event(&event(EventAction::Start), &acting);
        let mut again = info(ContainerState::Running, None);
        again.restart_count = 2;
        store.upsert(again, Utc::now());
        assert_eq!(store.get("c1").unwrap().restarts.len(), 3);
    }

    #[test]
    fn a_full_list_forgets_containers_that_are_gone() {
        let store = ObservedStore::default();
        store.upsert(info(ContainerState::Running, None), Utc::now());
        let gone = store.replace_all(vec![], Utc::now());
        assert_eq!(gone, vec!["c1".to_string()]);
        assert!(store.is_empty());
    }
}
