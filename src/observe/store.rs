//! The in-memory view of every observed container: last inspection, recent history, and what
//! the events told that an inspection cannot (manual stops, restarts, OOM kills).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, RwLock};

use crate::model::container::ContainerSummary;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::container::{
    ContainerEvent, ContainerInfo, ContainerState, EventAction, HealthStatus,
};
use crate::model::usage::UsagePoint;
use crate::observe::acting::Acting;

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
    /// `info` shows an exit told by a `die` event that no inspection has confirmed yet, and
    /// the next reconcile may decide from it without asking the engine (see
    /// [`ObservedStore::take_told_exit`]).
    #[serde(skip)]
    pub(crate) exit_told: bool,
    /// How the restarts already in `restarts` were accounted (events vs inspections).
    #[serde(skip)]
    tally: RestartTally,
}

impl Observed {
    fn new(info: ContainerInfo, now: DateTime<Utc>) -> Self {
        // Without an event to tell, an exit by SIGTERM/SIGKILL that was not an OOM kill is what
        // `docker stop` and `docker kill` leave: taken as a person's doing, never repaired.
        let manual_stop = matches!(info.state, ContainerState::Exited | ContainerState::Dead)
            && !info.oom_killed
            && info.stopped_by_signal();
        let unhealthy_since = (info.health == HealthStatus::Unhealthy).then_some(now);
        let tally = RestartTally::new(&info);
        Self {
            info,
            usage: VecDeque::new(),
            restarts: VecDeque::new(),
            manual_stop,
            unhealthy_since,
            oom_seen: false,
            seen_at: now,
            exit_told: false,
            tally,
        }
    }

    /// Takes in a `die` event of the run last inspected: `info` shows the exit (state, code,
    /// time, an OOM kill when its `oom` event came first). The exit may be decided without an
    /// inspection unless its code is 137 with no `oom` event yet: a SIGKILL, which may be the
    /// OOM killer's, whose event can still follow. A `die` of an earlier run, or of a container
    /// not known to be running, changes nothing.
    fn note_die(&mut self, at: DateTime<Utc>, exit_code: i64) {
        let running = matches!(
            self.info.state,
            ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
        );
        if !running || self.info.started_at.is_some_and(|s| s > at) {
            return;
        }
        self.info.state = ContainerState::Exited;
        self.info.exit_code = Some(exit_code);
        self.info.finished_at = Some(at);
        self.info.pid = None;
        self.info.oom_killed = self.oom_seen;
        self.exit_told = exit_code != crate::model::container::SIGKILL_EXIT_CODE || self.oom_seen;
    }
}

impl Observed {
    /// A container first inspected by this process that an earlier one had seen: its restarts
    /// go on from `history`, plus those the inspection shows happened in between (a new
    /// `StartedAt`, a grown `RestartCount`), each counted once.
    fn resumed(info: ContainerInfo, now: DateTime<Utc>, history: RestartHistory) -> Self {
        let mut o = Self::new(info, now);
        o.restarts = history.restarts;
        while o.restarts.len() > RESTARTS_RETAINED {
            o.restarts.pop_front();
        }
        o.tally = RestartTally {
            started_at: history.started_at,
            // A `docker start` or `docker restart` by hand sets the engine's count back to 0.
            restart_count: history.restart_count.min(o.info.restart_count),
            decided: history.decided,
            ran_before: history.ran_before,
            open: history.open,
            // The starts the earlier process accounted for add nothing when their events
            // arrive again.
            closed_accounted: u64::MAX,
            ..RestartTally::default()
        };
        let missed = o.tally.on_inspect(&o.info);
        let at = o.info.started_at.unwrap_or(now);
        for _ in 0..missed.min(RESTARTS_RETAINED as u64) {
            push_capped(&mut o.restarts, at, RESTARTS_RETAINED);
        }
        o
    }

    /// What a later process needs to go on counting this container's restarts.
    fn history(&self) -> RestartHistory {
        RestartHistory {
            restarts: self.restarts.clone(),
            started_at: self.tally.started_at,
            restart_count: self.tally.restart_count,
            decided: self.tally.decided,
            ran_before: self.tally.ran_before,
            // A start event the engine logged late (beyond START_EVENT_SLACK_MS) stays open
            // although an inspection well after it showed no newer start: it belongs to the
            // start already inspected, and must not absorb a restart the next operator finds.
            open: self
                .tally
                .open
                .iter()
                .copied()
                .filter(|t| *t + chrono::Duration::seconds(STALE_OPEN_SECS) > self.seen_at)
                .collect(),
        }
    }
}

/// An open start event this long before the last inspection belongs to an inspected start.
const STALE_OPEN_SECS: i64 = 5;

/// One container's restarts as an operator leaves them, so that the next one shows the same
/// count (and still sees a restart loop that began before it): kept in the state directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartHistory {
    /// The restarts seen, oldest first.
    pub restarts: VecDeque<DateTime<Utc>>,
    /// `StartedAt` of the last inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// `RestartCount` of the last inspection.
    #[serde(default)]
    pub restart_count: u64,
    /// Restart-policy restarts decided by the engine, not yet seen started.
    #[serde(default)]
    pub decided: u64,
    /// It had run before its last inspected start.
    #[serde(default)]
    pub ran_before: bool,
    /// Starts counted from events that no inspection has shown yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<DateTime<Utc>>,
}

/// How long after an inspected `StartedAt` the engine may log that start's `start` event. Two
/// real starts are never this close: the engine's own restart back-off starts at 100 ms.
const START_EVENT_SLACK_MS: i64 = 100;
/// How many recent `start` event instants are remembered to drop replays (after a resubscribe).
const EVENTS_REMEMBERED: usize = 16;

/// Counts each restart once, whatever the order in which `start` events and inspections arrive.
///
/// History is cut into intervals at each inspected `StartedAt`. The restarts of an interval are
/// at least the `start` events seen for it, at least the growth of the engine's `RestartCount`
/// (restart-policy restarts, whose events may have been dropped), and at least one when
/// `StartedAt` changed on a container that had run before. Events are counted when they
/// arrive (the timely signal); an inspection only adds what its interval lacks, and an event
/// arriving after the inspection of its interval only adds once that interval's events exceed
/// what was already counted for it.
#[derive(Clone, Debug, Default)]
struct RestartTally {
    /// `StartedAt` of the last inspection: the end of the last closed interval.
    started_at: Option<DateTime<Utc>>,
    /// `RestartCount` of the last inspection.
    restart_count: u64,
    /// Restart-policy restarts the engine decided (its `RestartCount` grows at the exit, before
    /// the restart delay) that no inspection has shown started yet.
    decided: u64,
    /// It had run before the open interval began: every start in it is a restart.
    ran_before: bool,
    /// Instants of the `start` events after the last closed interval (all counted as restarts
    /// but the container's very first start).
    open: Vec<DateTime<Utc>>,
    /// Starts seen by events in the last closed interval, and starts accounted for it.
    closed_seen: u64,
    closed_accounted: u64,
    /// Recent event instants, to drop an event delivered twice.
    recent: VecDeque<DateTime<Utc>>,
}

impl RestartTally {
    fn new(info: &ContainerInfo) -> Self {
        Self {
            started_at: info.started_at,
            restart_count: info.restart_count,
            ran_before: info.started_at.is_some() || info.finished_at.is_some(),
            // Starts up to the first inspection are its baseline, never restarts: their events
            // (the one of the start it shows, arriving after it) add nothing.
            closed_accounted: u64::MAX,
            ..Self::default()
        }
    }

    /// A `start` event at `t`: true when it is a restart not counted yet.
    fn on_start_event(&mut self, t: DateTime<Utc>) -> bool {
        if self.recent.contains(&t) {
            return false;
        }
        push_capped(&mut self.recent, t, EVENTS_REMEMBERED);
        if logged_by(self.started_at, t) {
            // Its interval was inspected already: it adds only beyond what was accounted.
            self.closed_seen += 1;
            if self.closed_seen > self.closed_accounted {
                self.closed_accounted += 1;
                return true;
            }
            return false;
        }
        let restart = self.ran_before || !self.open.is_empty();
        self.open.push(t);
        restart
    }

    /// An inspection: how many restarts it shows that no event counted.
    fn on_inspect(&mut self, info: &ContainerInfo) -> u64 {
        let stale = info.restart_count < self.restart_count
            || matches!((info.started_at, self.started_at), (Some(a), Some(b)) if a < b)
            || (info.started_at.is_none() && self.started_at.is_some());
        if stale {
            // An answer older than one already taken in (or a container reset): nothing new.
            return 0;
        }
        self.decided += info.restart_count - self.restart_count;
        self.restart_count = info.restart_count;
        let changed = info.started_at.is_some() && info.started_at != self.started_at;
        if !changed {
            // A grown RestartCount without a new start: decided, counted once it starts.
            return 0;
        }
        // Waiting for the engine's restart again: the last decided restart is still to come.
        let still_to_start = u64::from(info.state == ContainerState::Restarting).min(self.decided);
        let grown = self.decided - still_to_start;
        self.decided = still_to_start;
        self.started_at = info.started_at;
        let (closed, still_open): (Vec<_>, Vec<_>) = self
            .open
            .drain(..)
            .partition(|t| logged_by(info.started_at, *t));
        self.open = still_open;
        let seen = closed.len() as u64;
        // The container's very first start is in this interval: a start, not a restart.
        let first = u64::from(!self.ran_before);
        let starts = seen.max(grown + first).max(u64::from(changed));
        let counted = seen - seen.min(first);
        self.closed_seen = seen;
        self.closed_accounted = starts;
        self.ran_before = true;
        (starts - first).saturating_sub(counted)
    }
}

/// True when a `start` event at `t` belongs to the start at `started_at` or an earlier one.
fn logged_by(started_at: Option<DateTime<Utc>>, t: DateTime<Utc>) -> bool {
    started_at.is_some_and(|s| {
        s.checked_add_signed(chrono::Duration::milliseconds(START_EVENT_SLACK_MS))
            .is_none_or(|end| t <= end)
    })
}

/// Every observed container, by id.
#[derive(Debug, Default)]
pub struct ObservedStore {
    /// A std lock: held for map updates only, never across an await.
    containers: RwLock<HashMap<String, Observed>>,
    /// What an earlier operator left of containers not inspected yet (taken at the first
    /// inspection; dropped for those the first full list does not show). Locked after
    /// `containers` when both are.
    resume: Mutex<HashMap<String, RestartHistory>>,
}

impl ObservedStore {
    /// A store that goes on from the restart histories an earlier operator left (by id).
    pub fn resuming(histories: impl IntoIterator<Item = (String, RestartHistory)>) -> Self {
        Self {
            containers: RwLock::default(),
            resume: Mutex::new(histories.into_iter().collect()),
        }
    }

    /// A digest of what [`Self::histories`] would return, computed without copying it: the
    /// keeper of the histories file writes only when this changed.
    pub fn histories_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let map = self
            .containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let resume = self
            .resume
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Order-independent: a sum of the entries' own digests (the maps are unordered).
        let entry = |id: &str, history: &RestartHistory| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut h);
            history.hash(&mut h);
            h.finish()
        };
        let live = map.iter().fold(0u64, |acc, (id, o)| {
            acc.wrapping_add(entry(id, &o.history()))
        });
        resume
            .iter()
            .filter(|(id, _)| !map.contains_key(id.as_str()))
            .fold(live, |acc, (id, h)| acc.wrapping_add(entry(id, h)))
            .wrapping_add((map.len() + resume.len()) as u64)
    }

    /// Every container's restart history (and those still waiting to be resumed), by id: what
    /// to keep for the next operator.
    pub fn histories(&self) -> BTreeMap<String, RestartHistory> {
        let map = self
            .containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: BTreeMap<String, RestartHistory> = self
            .resume
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .into_iter()
            .collect();
        out.extend(map.iter().map(|(id, o)| (id.clone(), o.history())));
        out
    }

    /// A copy of one container's view.
    pub fn get(&self, id: &str) -> Option<Observed> {
        self.containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// A copy of the view of `id` when it shows an exit told by a `die` event and not yet
    /// decided (see [`Observed::exit_told`]); once only: the reconcile after inspects.
    pub fn take_told_exit(&self, id: &str) -> Option<Observed> {
        let mut map = self
            .containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let o = map.get_mut(id).filter(|o| o.exit_told)?;
        o.exit_told = false;
        Some(o.clone())
    }

    /// A copy of the view of the container named `name` (without the leading `/`).
    pub fn find_by_name(&self, name: &str) -> Option<Observed> {
        self.containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .find(|o| o.info.name == name)
            .cloned()
    }

    /// Copies of every view.
    pub fn all(&self) -> Vec<Observed> {
        let mut all: Vec<Observed> = self
            .containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|o| o.info.state == ContainerState::Running)
            .map(|o| o.info.id.clone())
            .collect()
    }

    /// How many containers are known.
    pub fn len(&self) -> usize {
        self.containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes in a fresh inspection, keeping the history.
    pub fn upsert(&self, info: ContainerInfo, now: DateTime<Utc>) {
        let mut map = self
            .containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(&info.id) {
            None => {
                let earlier = self
                    .resume
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&info.id);
                let observed = match earlier {
                    Some(history) => Observed::resumed(info, now, history),
                    None => Observed::new(info, now),
                };
                map.insert(observed.info.id.clone(), observed);
            }
            Some(o) => {
                // Restarts whose events never came (Docker's restart policy shows as a growing
                // RestartCount, any start as a new StartedAt); each counted once.
                let missed = o.tally.on_inspect(&info);
                let at = info.started_at.unwrap_or(now);
                if missed > 0 {
                    tracing::debug!(container = %info.name, missed, restart_count = info.restart_count, started_at = ?info.started_at, state = ?info.state, "restarts counted from an inspection");
                }
                for _ in 0..missed.min(RESTARTS_RETAINED as u64) {
                    push_capped(&mut o.restarts, at, RESTARTS_RETAINED);
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
                o.exit_told = false;
            }
        }
    }

    /// Compares the engine's container list with the last inspections, without inspecting:
    /// returns the containers to inspect again now (listed but never inspected, listed in
    /// another state, health or name, not inspected for `stale_after`, or gone), and forgets
    /// those that are gone (with what an earlier operator left of them).
    pub fn diff_list(
        &self,
        list: &[ContainerSummary],
        now: DateTime<Utc>,
        stale_after: std::time::Duration,
    ) -> Vec<String> {
        let listed: std::collections::HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
        let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        let mut map = self
            .containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut due: Vec<String> = map
            .keys()
            .filter(|id| !listed.contains(id.as_str()))
            .cloned()
            .collect();
        for id in &due {
            map.remove(id);
        }
        for summary in list {
            let changed = map.get(&summary.id).is_none_or(|o| {
                summary.differs_from(&o.info, now)
                    || now.signed_duration_since(o.seen_at) >= stale_after
            });
            if changed {
                due.push(summary.id.clone());
            }
        }
        // Containers an earlier operator saw that are gone (or out of scope) now.
        self.resume
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|id, _| listed.contains(id.as_str()));
        due
    }

    /// Forgets a container.
    pub fn remove(&self, id: &str) {
        self.containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Records what an event tells beyond an inspection. `acting` says which containers
    /// HemoStat itself is acting on: their stops and kills are not manual.
    pub fn apply_event(&self, event: &ContainerEvent, acting: &Acting) {
        let mut map = self
            .containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(o) = map.get_mut(&event.container_id) else {
            return;
        };
        let ours = acting.is_ours(&event.container_id);
        match &event.action {
            EventAction::Kill | EventAction::Stop if !ours => o.manual_stop = true,
            EventAction::Start => {
                if o.tally.on_start_event(event.time) {
                    tracing::debug!(container = %event.name, at = %event.time, "restart counted from a start event");
                    push_capped(&mut o.restarts, event.time, RESTARTS_RETAINED);
                }
                o.manual_stop = false;
                o.oom_seen = false;
                // Started again: what the `die` told is over; the reconcile inspects.
                o.exit_told = false;
            }
            // The exits of HemoStat's own stops and restarts are for its verification to see.
            EventAction::Die if !ours => {
                if let Some(code) = event.exit_code {
                    o.note_die(event.time, code);
                }
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
        self.push_usage_keeping(id, point, USAGE_RETAINED);
    }

    /// [`Self::push_usage`], keeping only the newest `keep` samples (at most
    /// [`USAGE_RETAINED`]): what the container's policy and the dashboard read, no more.
    pub fn push_usage_keeping(&self, id: &str, point: UsagePoint, keep: usize) {
        if let Some(o) = self
            .containers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(id)
        {
            push_capped(&mut o.usage, point, keep.clamp(1, USAGE_RETAINED));
            if o.usage.capacity() > 2 * o.usage.len().max(8) {
                o.usage.shrink_to_fit();
            }
        }
    }

    /// Copies of every container's last inspection (without the history [`Self::all`] copies).
    pub fn infos(&self) -> Vec<ContainerInfo> {
        self.containers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|o| o.info.clone())
            .collect()
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

    fn info(state: ContainerState, exit_code: Option<i64>) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            image: "img".into(),
            state,
            exit_code,
            started_at: Some(Utc::now()),
            pid: None,
            ..crate::engine::fake::running("web", &[])
        }
    }

    fn event(action: EventAction) -> ContainerEvent {
        ContainerEvent {
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
    fn a_die_event_tells_an_exit_that_may_be_decided_once_without_an_inspection() {
        let t0 = Utc::now();
        let secs = chrono::Duration::seconds;
        // (events before the die, die exit code, die time after the inspected start,
        //  the container's state as inspected, HemoStat acting, told, oom_killed)
        type Case = (
            &'static [EventAction],
            i64,
            i64,
            ContainerState,
            bool,
            bool,
            bool,
        );
        let cases: [Case; 8] = [
            (&[], 3, 5, ContainerState::Running, false, true, false),
            (&[], 0, 5, ContainerState::Running, false, true, false),
            // SIGKILL: the OOM killer's `oom` event may still come; inspect.
            (&[], 137, 5, ContainerState::Running, false, false, false),
            (
                &[EventAction::Oom],
                137,
                5,
                ContainerState::Running,
                false,
                true,
                true,
            ),
            // The die of an earlier run than the one inspected.
            (&[], 3, -5, ContainerState::Running, false, false, false),
            // Already inspected as exited: the inspection has it.
            (&[], 3, 5, ContainerState::Exited, false, false, false),
            // HemoStat's own restart: its verification watches.
            (&[], 143, 5, ContainerState::Running, true, false, false),
            // Started again after the die, before the reconcile took it.
            (&[], 3, 5, ContainerState::Running, false, false, false),
        ];
        for (i, (before, code, after, state, ours, told, oom)) in cases.into_iter().enumerate() {
            let store = ObservedStore::default();
            let acting = Acting::default();
            let mut inspected = info(state, None);
            inspected.started_at = Some(t0);
            store.upsert(inspected, t0);
            let _ours = ours.then(|| acting.begin("c1"));
            for action in before {
                store.apply_event(&event(action.clone()), &acting);
            }
            let mut die = event(EventAction::Die);
            die.time = t0 + secs(after);
            die.exit_code = Some(code);
            store.apply_event(&die, &acting);
            if i == 7 {
                let mut start = event(EventAction::Start);
                start.time = t0 + secs(after + 1);
                store.apply_event(&start, &acting);
            }
            let taken = store.take_told_exit("c1");
            assert_eq!(taken.is_some(), told, "case {i}");
            if let Some(o) = taken {
                assert_eq!(o.info.state, ContainerState::Exited, "case {i}");
                assert_eq!(o.info.exit_code, Some(code), "case {i}");
                assert_eq!(o.info.finished_at, Some(die.time), "case {i}");
                assert_eq!(o.info.oom_killed, oom, "case {i}");
                assert!(store.take_told_exit("c1").is_none(), "once only: case {i}");
            }
        }
    }

    #[test]
    fn an_inspection_replaces_what_a_die_event_told() {
        let store = ObservedStore::default();
        let acting = Acting::default();
        store.upsert(info(ContainerState::Running, None), Utc::now());
        let mut die = event(EventAction::Die);
        die.exit_code = Some(1);
        die.time = Utc::now() + chrono::Duration::seconds(1);
        store.apply_event(&die, &acting);
        store.upsert(info(ContainerState::Running, None), Utc::now());
        assert!(store.take_told_exit("c1").is_none());
        assert_eq!(store.get("c1").unwrap().info.state, ContainerState::Running);
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

    /// One step seen by the store: a `start` event at second `t`, or an inspection showing
    /// `RestartCount` and `StartedAt` (second, `None` for never started) of a running
    /// container (`Insp`) or of one waiting for the engine's restart after an exit (`Dying`).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Ev(i64),
        /// A `start` event the engine logged 300 ms after the start (a busy engine).
        Late(i64),
        Insp(u64, Option<i64>),
        /// An inspection like `Insp`, taken at second `now` (a resync).
        Resync(u64, Option<i64>, i64),
        Dying(u64, i64),
    }
    use Step::{Dying, Ev, Insp, Late, Resync};

    fn at(sec: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + sec, 0).unwrap()
    }

    fn restarts_after(steps: &[Step]) -> usize {
        let store = ObservedStore::default();
        play(&store, steps);
        store.get("c1").unwrap().restarts.len()
    }

    /// The restarts shown after `before` seen by one operator and `after` by the next, which
    /// starts from the history the first left (through its JSON form, as in the state dir).
    fn restarts_across_an_operator_restart(before: &[Step], after: &[Step]) -> usize {
        let first = ObservedStore::default();
        play(&first, before);
        let saved = serde_json::to_string(&first.histories()).unwrap();
        let loaded: BTreeMap<String, RestartHistory> = serde_json::from_str(&saved).unwrap();
        let second = ObservedStore::resuming(loaded);
        play(&second, after);
        second.get("c1").unwrap().restarts.len()
    }

    fn play(store: &ObservedStore, steps: &[Step]) {
        let acting = Acting::default();
        for step in steps {
            match *step {
                Ev(t) => {
                    let mut e = event(EventAction::Start);
                    // The engine logs a start a few ms after setting StartedAt.
                    e.time = at(t) + chrono::Duration::milliseconds(3);
                    store.apply_event(&e, &acting);
                }
                Late(t) => {
                    let mut e = event(EventAction::Start);
                    e.time = at(t) + chrono::Duration::milliseconds(300);
                    store.apply_event(&e, &acting);
                }
                Insp(count, started) => {
                    let mut i = info(ContainerState::Running, None);
                    i.restart_count = count;
                    i.started_at = started.map(at);
                    // Taken just after the start it shows.
                    let now = at(started.unwrap_or(0)) + chrono::Duration::milliseconds(500);
                    store.upsert(i, now);
                }
                Resync(count, started, now) => {
                    let mut i = info(ContainerState::Running, None);
                    i.restart_count = count;
                    i.started_at = started.map(at);
                    store.upsert(i, at(now));
                }
                Dying(count, started) => {
                    let mut i = info(ContainerState::Restarting, Some(1));
                    i.restart_count = count;
                    i.started_at = Some(at(started));
                    store.upsert(i, at(started) + chrono::Duration::milliseconds(600));
                }
            }
        }
    }

    #[test]
    fn restarts_seen_survive_an_operator_restart_and_those_in_between_are_added_once() {
        let two_policy_restarts: &[Step] = &[
            Insp(0, Some(0)),
            Ev(1),
            Insp(1, Some(1)),
            Ev(2),
            Insp(2, Some(2)),
        ];
        let cases: &[(&str, &[Step], &[Step], usize)] = &[
            (
                "nothing happened in between",
                two_policy_restarts,
                &[Insp(2, Some(2))],
                2,
            ),
            (
                "the events of starts already counted arrive again",
                two_policy_restarts,
                &[Insp(2, Some(2)), Ev(2), Ev(1)],
                2,
            ),
            (
                "one policy restart while no operator ran",
                two_policy_restarts,
                &[Insp(3, Some(3))],
                3,
            ),
            (
                "two policy restarts while no operator ran, then a third seen live",
                two_policy_restarts,
                &[Insp(4, Some(4)), Ev(5), Insp(5, Some(5))],
                5,
            ),
            (
                "restarted by hand while no operator ran: the engine's count back to 0",
                two_policy_restarts,
                &[Insp(0, Some(3))],
                3,
            ),
            (
                "counted from its event, the operator killed before the inspection",
                &[Insp(0, Some(0)), Ev(1)],
                &[Insp(1, Some(1))],
                1,
            ),
            (
                "a restart loop going on across the operator restart",
                &[Insp(0, Some(0)), Dying(1, 0), Ev(1)],
                &[Dying(2, 1), Ev(2), Insp(2, Some(2))],
                2,
            ),
            (
                "a start event logged late, inspected since: a restart in between still counts",
                &[
                    Insp(0, Some(0)),
                    Late(1),
                    Insp(1, Some(1)),
                    Resync(1, Some(1), 30),
                ],
                &[Insp(0, Some(40))],
                // The live count of the late event is 2 (START_EVENT_SLACK_MS), then one more.
                3,
            ),
            (
                "a container never restarted",
                &[Insp(0, Some(0))],
                &[Insp(0, Some(0))],
                0,
            ),
        ];
        for (what, before, after, want) in cases {
            assert_eq!(
                restarts_across_an_operator_restart(before, after),
                *want,
                "{what}: {before:?} then {after:?}"
            );
        }
    }

    #[test]
    fn the_history_of_a_container_gone_while_no_operator_ran_is_dropped_at_the_first_list() {
        let first = ObservedStore::default();
        play(&first, &[Insp(0, Some(0)), Ev(1), Insp(1, Some(1))]);
        let second = ObservedStore::resuming(first.histories());
        assert_eq!(second.histories().len(), 1, "kept until a list says");
        let mut other = info(ContainerState::Running, None);
        other.id = "c2".into();
        let list = [summary(&other)];
        let due = second.diff_list(&list, Utc::now(), std::time::Duration::from_secs(300));
        assert_eq!(due, ["c2"], "the new container is to be inspected");
        assert!(second.histories().is_empty(), "c1's history is dropped");
        second.upsert(other, Utc::now());
        let kept: Vec<String> = second.histories().into_keys().collect();
        assert_eq!(kept, ["c2"]);
    }

    #[test]
    fn each_restart_is_counted_once_whatever_the_order_of_events_and_inspections() {
        let cases: &[(&str, &[Step], usize)] = &[
            (
                "policy restart, event first",
                &[Insp(0, Some(0)), Ev(1), Insp(1, Some(1))],
                1,
            ),
            (
                "policy restart, inspection first",
                &[Insp(0, Some(0)), Insp(1, Some(1)), Ev(1)],
                1,
            ),
            (
                "policy restart, event dropped",
                &[Insp(0, Some(0)), Insp(1, Some(1))],
                1,
            ),
            (
                "policy restart, no inspection yet",
                &[Insp(0, Some(0)), Ev(1)],
                1,
            ),
            (
                "three policy restarts, two events dropped",
                &[Insp(0, Some(0)), Ev(1), Insp(3, Some(3))],
                3,
            ),
            (
                "five policy restarts, events and inspections interleaved",
                &[
                    Insp(0, Some(0)),
                    Ev(1),
                    Insp(1, Some(1)),
                    Insp(2, Some(2)),
                    Ev(2),
                    Ev(3),
                    Ev(4),
                    Insp(3, Some(3)),
                    Insp(4, Some(4)),
                    Ev(5),
                    Insp(5, Some(5)),
                ],
                5,
            ),
            (
                "the engine's RestartCount grows at the exit, before the start event",
                &[Insp(0, Some(0)), Dying(1, 0), Ev(1), Insp(1, Some(1))],
                1,
            ),
            (
                "grown at the exit, then inspected running, then the start event",
                &[Insp(0, Some(0)), Dying(1, 0), Insp(1, Some(1)), Ev(1)],
                1,
            ),
            (
                "grown at the exit, the start event, no inspection since",
                &[Insp(0, Some(0)), Dying(1, 0), Ev(1)],
                1,
            ),
            (
                "inspected at the next exit with its restart still to come",
                &[
                    Insp(0, Some(0)),
                    Dying(1, 0),
                    Ev(1),
                    Dying(2, 1),
                    Ev(2),
                    Dying(3, 2),
                ],
                2,
            ),
            (
                "a loop of four, inspected at every exit and start",
                &[
                    Insp(0, Some(0)),
                    Dying(1, 0),
                    Ev(1),
                    Insp(1, Some(1)),
                    Dying(2, 1),
                    Insp(2, Some(2)),
                    Ev(2),
                    Dying(3, 2),
                    Ev(3),
                    Dying(4, 3),
                    Dying(4, 3),
                    Ev(4),
                    Insp(4, Some(4)),
                ],
                4,
            ),
            (
                "a loop of three whose events were all dropped, inspected at exits",
                &[
                    Insp(0, Some(0)),
                    Dying(1, 0),
                    Dying(2, 1),
                    Dying(3, 2),
                    Insp(3, Some(3)),
                ],
                3,
            ),
            (
                "a resync inspects again and again",
                &[
                    Insp(0, Some(0)),
                    Ev(1),
                    Insp(1, Some(1)),
                    Insp(1, Some(1)),
                    Insp(1, Some(1)),
                ],
                1,
            ),
            (
                "an event delivered twice after a resubscribe",
                &[Insp(0, Some(0)), Ev(1), Ev(1), Insp(1, Some(1)), Ev(1)],
                1,
            ),
            (
                "an operator restart (RestartCount does not grow), event first",
                &[Insp(0, Some(0)), Ev(1), Insp(0, Some(1))],
                1,
            ),
            (
                "an operator restart, inspection first",
                &[Insp(0, Some(0)), Insp(0, Some(1)), Ev(1)],
                1,
            ),
            (
                "an operator restart mid-loop between policy restarts",
                &[
                    Insp(0, Some(0)),
                    Ev(1),
                    Insp(1, Some(1)),
                    Ev(2),
                    Ev(3),
                    Insp(2, Some(3)),
                ],
                3,
            ),
            (
                "an operator restart and a policy restart, both events after the inspection",
                &[Insp(0, Some(0)), Insp(1, Some(2)), Ev(1), Ev(2)],
                2,
            ),
            (
                "a stale inspection answered after a newer one",
                &[
                    Insp(0, Some(0)),
                    Ev(1),
                    Insp(1, Some(1)),
                    Insp(0, Some(0)),
                    Insp(1, Some(1)),
                ],
                1,
            ),
            (
                "an inspection older than an event already seen",
                &[
                    Insp(0, Some(0)),
                    Ev(1),
                    Ev(2),
                    Insp(1, Some(1)),
                    Insp(2, Some(2)),
                ],
                2,
            ),
            (
                "the first start of a created container is no restart",
                &[Insp(0, None), Ev(1), Insp(0, Some(1))],
                0,
            ),
            (
                "the first start of a created container, inspection first",
                &[Insp(0, None), Insp(0, Some(1)), Ev(1)],
                0,
            ),
        ];
        for (what, steps, want) in cases {
            assert_eq!(restarts_after(steps), *want, "{what}: {steps:?}");
        }
    }

    #[test]
    fn a_panic_while_the_lock_is_held_does_not_stop_the_store() {
        let store = std::sync::Arc::new(ObservedStore::default());
        store.upsert(info(ContainerState::Running, None), Utc::now());
        let holder = store.clone();
        let panicked = std::thread::spawn(move || {
            let _map = holder.containers.write().unwrap();
            panic!("a bug while holding the store's lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(store.containers.is_poisoned());
        let mut again = info(ContainerState::Exited, Some(1));
        again.id = "c2".into();
        store.upsert(again, Utc::now());
        assert_eq!(store.len(), 2);
        assert!(store.get("c1").is_some());
        store.apply_event(&event(EventAction::Kill), &Acting::default());
        assert!(store.get("c1").unwrap().manual_stop);
    }

    #[test]
    fn a_full_list_forgets_containers_that_are_gone() {
        let store = ObservedStore::default();
        store.upsert(info(ContainerState::Running, None), Utc::now());
        let gone = store.diff_list(&[], Utc::now(), std::time::Duration::from_secs(300));
        assert_eq!(gone, vec!["c1".to_string()]);
        assert!(store.is_empty());
    }

    /// The engine's status text of a running `info` listed at `at`.
    fn uptime_text(info: &ContainerInfo, at: DateTime<Utc>) -> String {
        let up = (at - info.started_at.unwrap()).to_std().unwrap();
        format!("Up {}", crate::model::uptime::UptimeBounds::human(up))
    }

    fn summary(info: &ContainerInfo) -> ContainerSummary {
        ContainerSummary {
            id: info.id.clone(),
            name: info.name.clone(),
            labels: info.labels.clone(),
            state: info.state,
            health: info.health,
            up_for: None,
        }
    }

    #[test]
    fn a_list_asks_for_an_inspection_only_of_what_may_have_changed() {
        let t0 = Utc::now();
        let stale = std::time::Duration::from_secs(300);
        let store = ObservedStore::default();
        let running = info(ContainerState::Running, None);
        store.upsert(running.clone(), t0);
        let mut exited = running.clone();
        exited.state = ContainerState::Exited;
        let mut unhealthy = running.clone();
        unhealthy.health = HealthStatus::Unhealthy;
        let mut new = running.clone();
        new.id = "c9".into();
        let later = |s: i64| t0 + chrono::Duration::seconds(s);
        // Listed 30 s on as up for 3 s: it restarted and its events were lost.
        let restarted_unseen = ContainerSummary {
            up_for: crate::model::uptime::UptimeBounds::of_status("Up 3 seconds"),
            ..summary(&running)
        };
        let up_as_inspected = |status: &str| ContainerSummary {
            up_for: crate::model::uptime::UptimeBounds::of_status(status),
            ..summary(&running)
        };
        // (what, the list, when, the containers to inspect)
        type Case<'a> = (&'a str, Vec<ContainerSummary>, DateTime<Utc>, Vec<&'a str>);
        let cases: [Case; 7] = [
            ("unchanged", vec![summary(&running)], later(30), vec![]),
            (
                "up as long as the inspected run",
                vec![up_as_inspected(&uptime_text(&running, later(30)))],
                later(30),
                vec![],
            ),
            (
                "up for less than the inspected run",
                vec![restarted_unseen],
                later(30),
                vec!["c1"],
            ),
            (
                "another state",
                vec![summary(&exited)],
                later(30),
                vec!["c1"],
            ),
            (
                "another health",
                vec![summary(&unhealthy)],
                later(30),
                vec!["c1"],
            ),
            (
                "not inspected for stale_after",
                vec![summary(&running)],
                later(300),
                vec!["c1"],
            ),
            (
                "new",
                vec![summary(&running), summary(&new)],
                later(30),
                vec!["c9"],
            ),
        ];
        for (what, list, now, want) in cases {
            assert_eq!(store.diff_list(&list, now, stale), want, "{what}");
            assert_eq!(
                store.get("c1").unwrap().info,
                running,
                "{what}: a list never replaces an inspection"
            );
        }
    }
}
