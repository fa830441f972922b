//! A delaying, de-duplicating work queue keyed by container id, and the runner that drains it.
//!
//! The idea is kube-runtime's `scheduler.rs` + `controller/runner.rs`, cut down to what a
//! single Docker host needs:
//!
//! - [`WorkQueue::schedule`] asks for `key` to be worked on at an instant. A key is queued at
//!   most once; scheduling it again keeps the *earlier* of the two instants.
//! - [`run_with_slots`] pops due keys and runs the work for each with at most `max_concurrent` in flight,
//!   and never two runs of one key at once. A key that comes due while its previous run is still
//!   going waits, and runs once more when that run ends, however often it was scheduled meanwhile.
//! - [`run_with_slots`] is the same, except that a run may give its concurrency [`Slot`] back
//!   before it ends ([`Slot::release`]): it keeps its key (no second run of it starts) but no
//!   longer counts against `max_concurrent`. The reconcile loop does this once a decision is
//!   made, gated and announced, so that a repair waiting on the engine never delays the
//!   decisions about other containers.
//!
//! ```ignore
//! let (queue, rx) = WorkQueue::new();
//! queue.schedule_now(container_id);
//! let q = queue.clone();
//! run(rx, 8, shutdown, move |id| {
//!     let q = q.clone();
//!     async move {
//!         // reconcile `id`, then ask to be looked at again later
//!         q.schedule_after(id, Duration::from_secs(300));
//!     }
//! })
//! .await;
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue;
use tracing::Instrument;

/// A cloneable handle for scheduling keys; every clone feeds the same queue.
///
/// Cheap to clone, so the work closure given to [`run_with_slots`] can capture one and requeue its own key.
pub(crate) struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

/// The receiving side of a [`WorkQueue`]; [`run_with_slots`] consumes it, so there is one runner per queue.
pub(crate) struct WorkReceiver<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    /// A std mutex, not a tokio one: it is never held across an `.await`, and it lets
    /// [`WorkQueue::schedule`] stay synchronous so it can be called from anywhere.
    state: Mutex<State<K>>,
}

/// Where a queued (not yet started) key stands.
enum Waiting {
    /// Waiting in the timer wheel for `at`.
    Delayed {
        timer: delay_queue::Key,
        at: Instant,
    },
    /// Its time has come. It is in `ready`, unless its previous run is still in flight.
    Due,
}

struct State<K> {
    /// Every queued key, exactly once: this is what de-duplicates.
    slots: HashMap<K, Waiting>,
    /// Timers for the `Waiting::Delayed` keys. It wakes the runner itself when an entry is
    /// inserted or moved earlier, so `schedule` needs no waker of its own.
    timers: DelayQueue<K>,
    /// Due keys that may start now, oldest first.
    ready: VecDeque<K>,
    /// Keys whose work is in flight.
    running: HashSet<K>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> std::fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("WorkQueue")
            .field("len", &state.slots.len())
            .field("in_flight", &state.running.len())
            .finish()
    }
}

impl<K> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // Nothing panics while the lock is held; if it ever does, the state is still consistent
        // enough to keep the controller going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// Creates an empty queue: the handle to schedule with, and the side to give to [`run_with_slots`].
    pub(crate) fn new() -> (Self, WorkReceiver<K>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: HashMap::new(),
                timers: DelayQueue::new(),
                ready: VecDeque::new(),
                running: HashSet::new(),
            }),
        });
        let rx = WorkReceiver {
            shared: Arc::clone(&shared),
        };
        (Self { shared }, rx)
    }

    /// Runs `key` at `at` (a past instant means now). If `key` is already queued, the earlier
    /// of the two instants wins. If `key` is running, this queues a follow-up run.
    pub(crate) fn schedule(&self, key: K, at: Instant) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        match state.slots.entry(key) {
            Entry::Occupied(mut slot) => match slot.get_mut() {
                Waiting::Due => {}
                Waiting::Delayed { timer, at: current } => {
                    if at < *current {
                        state.timers.reset_at(timer, at);
                        *current = at;
                    }
                }
            },
            Entry::Vacant(slot) => {
                let timer = state.timers.insert_at(slot.key().clone(), at);
                slot.insert(Waiting::Delayed { timer, at });
            }
        }
    }

    /// Runs `key` as soon as possible.
    pub(crate) fn schedule_now(&self, key: K) {
        self.schedule(key, Instant::now());
    }

    /// Runs `key` once `delay` has passed (or earlier, if it is already queued for earlier).
    pub(crate) fn schedule_after(&self, key: K, delay: Duration) {
        self.schedule(key, Instant::now() + delay);
    }

    /// How many keys are queued and not yet started (the queue depth). A key that is running
    /// and also queued for a follow-up run counts here too.
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().slots.len()
    }

    /// Whether no key is queued.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys are being worked on right now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.lock().running.len()
    }
}

impl<K: Clone + Eq + Hash> Shared<K> {
    /// Hands out the next key that is due and not running, and marks it running.
    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<K> {
        let mut guard = self.lock();
        let state = &mut *guard;
        // Drain every expired timer so `ready` stays in due order. The last poll returned
        // Pending or Ready(None), which registered `cx`'s waker with the timers.
        while let Poll::Ready(Some(expired)) = state.timers.poll_expired(cx) {
            let key = expired.into_inner();
            state.slots.insert(key.clone(), Waiting::Due);
            if !state.running.contains(&key) {
                state.ready.push_back(key);
            }
            // Else it waits for `finish` to release it.
        }
        match state.ready.pop_front() {
            Some(key) => {
                state.slots.remove(&key);
                state.running.insert(key.clone());
                Poll::Ready(key)
            }
            None => Poll::Pending,
        }
    }

    /// Marks `key`'s run as over, releasing a follow-up run that came due meanwhile.
    fn finish(&self, key: K) {
        let mut state = self.lock();
        state.running.remove(&key);
        if matches!(state.slots.get(&key), Some(Waiting::Due)) {
            state.ready.push_back(key);
        }
    }
}

/// One of the `max_concurrent` places of [`run_with_slots`], held by a run until it ends or
/// calls [`Slot::release`].
#[derive(Debug, Default)]
pub(crate) struct Slot(Option<OwnedSemaphorePermit>);

impl Slot {
    /// A slot of no runner (for calling work directly, as tests do): releasing it does nothing.
    pub(crate) fn unbounded() -> Self {
        Self(None)
    }

    /// Gives the place back: the runner may start another key now, while this run goes on
    /// (still holding its own key). Releasing twice is the same as once.
    pub(crate) fn release(&mut self) {
        self.0.take();
    }

    /// Whether this run still counts against the runner's `max_concurrent`.
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

/// Runs `work(key)` for each key as it comes due, until `shutdown` is cancelled.
///
/// At most `max_concurrent` runs are in flight (0 is treated as 1), each on its own tokio task,
/// and never two for one key. Once `shutdown` is cancelled no further key is started; this
/// returns when the runs in flight have finished. Keys still queued stay queued. A run that
/// panics is logged and counts as finished; its key is not requeued.
#[cfg(test)]
pub(crate) async fn run<K, F, Fut>(
    queue: WorkReceiver<K>,
    max_concurrent: usize,
    shutdown: CancellationToken,
    work: F,
) where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_with_slots(queue, max_concurrent, shutdown, move |key, slot| {
        let work = work(key);
        async move {
            let _held_to_the_end = slot;
            work.await;
        }
    })
    .await;
}

/// Runs `work(key, slot)` for each key as it comes due, until `shutdown` is cancelled, each run
/// handed its [`Slot`]: at most `max_concurrent` runs hold one, and a run that releases it early
/// goes on beside them (still the only run of its key).
///
/// On shutdown this waits for every run, released or not.
pub(crate) async fn run_with_slots<K, F, Fut>(
    queue: WorkReceiver<K>,
    max_concurrent: usize,
    shutdown: CancellationToken,
    work: F,
) where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    F: Fn(K, Slot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let shared = queue.shared;
    let mut in_flight = FuturesUnordered::new();
    // A place taken before a key is due, so a key starts the moment it is.
    let mut spare: Option<OwnedSemaphorePermit> = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(key) = in_flight.next(), if !in_flight.is_empty() => shared.finish(key),
            permit = Arc::clone(&slots).acquire_owned(), if spare.is_none() => {
                spare = Some(permit.expect("the runner never closes its semaphore"));
            }
            key = poll_fn(|cx| shared.poll_pop(cx)), if spare.is_some() => {
                let task = tokio::spawn(work(key.clone(), Slot(spare.take())).in_current_span());
                in_flight.push(async move {
                    if let Err(error) = task.await {
                        tracing::error!(%error, "queued work failed");
                    }
                    key
                });
            }
        }
    }
    while let Some(key) = in_flight.next().await {
        shared.finish(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::task::JoinHandle;
    use tokio::time::sleep;

    /// Runs per key, as counted by the work that [`start`] gives its runner.
    type Runs = Arc<Mutex<HashMap<usize, usize>>>;

    /// Starts a runner whose work for a key sleeps `busy`, and counts runs per key.
    fn start(
        cap: usize,
        busy: Duration,
    ) -> (WorkQueue<usize>, Runs, CancellationToken, JoinHandle<()>) {
        let (queue, rx) = WorkQueue::new();
        let runs = Arc::new(Mutex::new(HashMap::new()));
        let shutdown = CancellationToken::new();
        let counted = Arc::clone(&runs);
        let runner = tokio::spawn(run(rx, cap, shutdown.clone(), move |key| {
            let runs = Arc::clone(&counted);
            async move {
                sleep(busy).await;
                *runs.lock().unwrap().entry(key).or_default() += 1;
            }
        }));
        (queue, runs, shutdown, runner)
    }

    fn runs_of(runs: &Mutex<HashMap<usize, usize>>, key: usize) -> usize {
        runs.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn scheduling_the_same_key_twice_keeps_the_earliest_time() {
        let (queue, runs, _shutdown, _runner) = start(4, Duration::ZERO);
        queue.schedule_after(1, Duration::from_secs(10));
        queue.schedule_after(1, Duration::from_secs(5));
        queue.schedule_after(1, Duration::from_secs(20));
        assert_eq!(queue.len(), 1);

        sleep(Duration::from_millis(4_999)).await;
        assert_eq!(runs_of(&runs, 1), 0);
        sleep(Duration::from_millis(2)).await;
        assert_eq!(runs_of(&runs, 1), 1);
        assert!(queue.is_empty(), "the later requests were merged, not kept");
        sleep(Duration::from_secs(60)).await;
        assert_eq!(runs_of(&runs, 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_do_not_run_before_their_time() {
        let (queue, runs, _shutdown, _runner) = start(4, Duration::ZERO);
        queue.schedule_after(1, Duration::from_secs(10));
        queue.schedule_after(2, Duration::from_secs(30));

        sleep(Duration::from_millis(9_999)).await;
        assert_eq!((runs_of(&runs, 1), runs_of(&runs, 2)), (0, 0));
        sleep(Duration::from_millis(2)).await;
        assert_eq!((runs_of(&runs, 1), runs_of(&runs, 2)), (1, 0));
        sleep(Duration::from_secs(20)).await;
        assert_eq!((runs_of(&runs, 1), runs_of(&runs, 2)), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn runner_should_never_run_two_instances_of_one_key_at_once() {
        const KEYS: usize = 5;
        let (queue, rx) = WorkQueue::new();
        let current: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| 0.into()).collect());
        let max: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| 0.into()).collect());
        let total = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (c, m, t) = (Arc::clone(&current), Arc::clone(&max), Arc::clone(&total));
        let runner = tokio::spawn(run(rx, 100, shutdown.clone(), move |key: usize| {
            let (c, m, t) = (Arc::clone(&c), Arc::clone(&m), Arc::clone(&t));
            async move {
                let now = c[key].fetch_add(1, SeqCst) + 1;
                m[key].fetch_max(now, SeqCst);
                sleep(Duration::from_millis(250)).await;
                c[key].fetch_sub(1, SeqCst);
                t.fetch_add(1, SeqCst);
            }
        }));

        for _ in 0..100 {
            for key in 0..KEYS {
                queue.schedule_now(key);
            }
            sleep(Duration::from_millis(30)).await;
        }
        shutdown.cancel();
        runner.await.unwrap();

        for key in 0..KEYS {
            assert_eq!(max[key].load(SeqCst), 1, "key {key} ran twice at once");
        }
        // 3 s of flooding with 250 ms runs: about 12 back-to-back runs per key.
        assert!(total.load(SeqCst) >= KEYS * 10, "{total:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_scheduled_while_running_runs_once_more_afterwards() {
        let (queue, runs, _shutdown, _runner) = start(4, Duration::from_secs(10));
        queue.schedule_now(1);
        sleep(Duration::from_secs(1)).await;
        assert_eq!((queue.in_flight(), queue.len()), (1, 0));

        for _ in 0..5 {
            queue.schedule_now(1);
        }
        assert_eq!(queue.len(), 1, "triggers during a run coalesce");
        sleep(Duration::from_secs(5)).await;
        assert_eq!(
            queue.in_flight(),
            1,
            "the follow-up waits for the running one"
        );
        assert_eq!(runs_of(&runs, 1), 0);

        sleep(Duration::from_secs(60)).await;
        assert_eq!(runs_of(&runs, 1), 2);
        assert_eq!((queue.in_flight(), queue.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn runner_respects_the_global_concurrency_cap() {
        let (queue, rx) = WorkQueue::new();
        let current = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (c, m, d) = (Arc::clone(&current), Arc::clone(&max), Arc::clone(&done));
        tokio::spawn(run(rx, 3, CancellationToken::new(), move |_key: usize| {
            let (c, m, d) = (Arc::clone(&c), Arc::clone(&m), Arc::clone(&d));
            async move {
                m.fetch_max(c.fetch_add(1, SeqCst) + 1, SeqCst);
                sleep(Duration::from_secs(1)).await;
                c.fetch_sub(1, SeqCst);
                d.fetch_add(1, SeqCst);
            }
        }));
        for key in 0..10 {
            queue.schedule_now(key);
        }

        sleep(Duration::from_millis(500)).await;
        assert_eq!((queue.in_flight(), queue.len()), (3, 7));
        sleep(Duration::from_secs(4)).await;
        assert_eq!(done.load(SeqCst), 10);
        assert_eq!(max.load(SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_in_flight_work_and_stops_popping() {
        let (queue, runs, shutdown, runner) = start(4, Duration::from_secs(5));
        let started = Instant::now();
        queue.schedule_now(1);
        queue.schedule_now(2);
        queue.schedule_after(3, Duration::from_secs(2));
        sleep(Duration::from_secs(1)).await;
        assert_eq!(queue.in_flight(), 2);

        shutdown.cancel();
        queue.schedule_now(4);
        runner.await.unwrap();

        assert!(started.elapsed() >= Duration::from_secs(5));
        assert_eq!((runs_of(&runs, 1), runs_of(&runs, 2)), (1, 1));
        assert_eq!((runs_of(&runs, 3), runs_of(&runs, 4)), (0, 0));
        assert_eq!(
            (queue.in_flight(), queue.len()),
            (0, 2),
            "unstarted keys stay queued"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_panics_frees_its_key_and_the_runner_goes_on() {
        let (queue, rx) = WorkQueue::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        tokio::spawn(run(rx, 2, CancellationToken::new(), move |_key: usize| {
            let n = r.fetch_add(1, SeqCst);
            async move { assert!(n > 0, "first run panics on purpose") }
        }));
        queue.schedule_now(1);
        sleep(Duration::from_secs(1)).await;
        assert_eq!((runs.load(SeqCst), queue.in_flight()), (1, 0));

        queue.schedule_now(1);
        sleep(Duration::from_secs(1)).await;
        assert_eq!((runs.load(SeqCst), queue.in_flight()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_keys_each_run_exactly_as_often_as_they_requeue_themselves() {
        const KEYS: usize = 1000;
        const RUNS: usize = 3;
        let (queue, rx) = WorkQueue::new();
        let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| 0.into()).collect());
        let (q, r) = (queue.clone(), Arc::clone(&runs));
        tokio::spawn(run(rx, 16, CancellationToken::new(), move |key: usize| {
            let (q, r) = (q.clone(), Arc::clone(&r));
            async move {
                sleep(Duration::from_millis(100)).await;
                if r[key].fetch_add(1, SeqCst) + 1 < RUNS {
                    q.schedule_after(key, Duration::from_secs(1));
                }
            }
        }));
        for key in 0..KEYS {
            // Duplicates at later times must not add runs.
            queue.schedule_after(key, Duration::from_secs((key % 17) as u64));
            queue.schedule_after(key, Duration::from_secs(20));
        }
        assert_eq!(queue.len(), KEYS);

        sleep(Duration::from_secs(600)).await;
        for key in 0..KEYS {
            assert_eq!(runs[key].load(SeqCst), RUNS, "key {key}");
        }
        assert_eq!((queue.in_flight(), queue.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_releases_its_slot_lets_other_keys_start_but_keeps_its_own() {
        let (queue, rx) = WorkQueue::new();
        let started = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&started);
        tokio::spawn(run_with_slots(
            rx,
            1,
            CancellationToken::new(),
            move |_key: usize, mut slot: Slot| {
                let s = Arc::clone(&s);
                async move {
                    s.fetch_add(1, SeqCst);
                    sleep(Duration::from_secs(1)).await;
                    assert!(slot.is_held());
                    slot.release();
                    assert!(!slot.is_held());
                    sleep(Duration::from_secs(10)).await;
                }
            },
        ));
        for key in 0..5 {
            queue.schedule_now(key);
        }
        sleep(Duration::from_millis(4_500)).await;
        assert_eq!(started.load(SeqCst), 5, "one at a time, each for 1 s");
        assert_eq!(queue.in_flight(), 5, "released runs go on");

        queue.schedule_now(0);
        sleep(Duration::from_secs(5)).await;
        assert_eq!(started.load(SeqCst), 5, "key 0 waits for its own run");
        sleep(Duration::from_secs(10)).await;
        assert_eq!(started.load(SeqCst), 6);
    }
}
