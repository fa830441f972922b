//! Hot reload of `--policies` files: watched (notify, debounced), rescanned on every change,
//! periodically as a safety net and on demand (`SIGHUP`); each document's last good version wins.
//!
//! Every change triggers a full rescan of the given paths, so atomic swaps that notify reports
//! only as a rename elsewhere (a Kubernetes ConfigMap's `..data` symlink, a git-sync link, an
//! editor's temp file renamed over the original) are read like any edit. Watches follow the
//! paths' current targets: when a symlinked `--policies` directory now points elsewhere, the
//! watcher is set up again on the new target.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::last_good::{Change, Document, FileScan, LastGood, Merged, Scan, merge};
use crate::policy::HealthPolicy;
use crate::policy::documents::split_documents;
use crate::policy::load::{Diagnostic, Walk, collect_files, load_document, read_text};
use crate::policy::registry::{PolicyRegistry, Provenance, ReloadStatus};

/// How long the watcher waits for a burst of file events to settle before a rescan.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the debouncer's thread looks for settled events (its default, a quarter of
/// [`DEBOUNCE`], woke it 20 times a second for nothing: a tenth of an idle operator's CPU
/// time at 1000 containers). A change is in force 200–400 ms after it.
pub(crate) const DEBOUNCE_TICK: Duration = DEBOUNCE;

/// What triggered a scan (the `trigger` label of `hemostat_policy_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A file event.
    Watch,
    /// The periodic rescan.
    Rescan,
    /// `SIGHUP`.
    Signal,
}

impl Trigger {
    /// Every trigger.
    #[cfg(test)]
    pub(crate) const ALL: [Self; 3] = [Self::Watch, Self::Rescan, Self::Signal];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Rescan => "rescan",
            Self::Signal => "sighup",
        }
    }
}

/// Where the source reports what it found (the operator's metrics).
pub trait ReloadReporter: Send + Sync {
    /// A scan ran.
    fn scanned(&self, trigger: Trigger);
    /// `count` problems were found that had not been reported before.
    fn problems_found(&self, count: usize);
    /// `count` policies are enforced from a last good version now.
    fn kept_last_good(&self, count: usize);
}

/// Where a new set of file policies goes: the registry itself, or (with Redis) the base set
/// that the Redis watcher composes with the applied policies.
pub(crate) type Publish = Box<dyn Fn(Vec<HealthPolicy>) + Send + Sync>;

/// How [`FileSource::run`] notices changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reload {
    /// The period of the safety-net rescan.
    pub rescan: Duration,
    /// Whether to watch the files (notify); without it only the rescan and `reload` notice
    /// changes.
    pub watch: bool,
}

/// The policy files given to `hemostat run --policies`, and the last good version of each
/// of their documents.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    state: LastGood,
    /// The warnings of the last scan, so that each is logged once.
    warned: BTreeSet<String>,
}

/// What a scan read: the outcome of each document, and the warnings of the valid ones (a
/// field whose feature is not implemented yet).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Scanned {
    /// Every policy file, in load order.
    pub files: Scan,
    /// `file:line:col` warnings about valid documents.
    pub warnings: Vec<Diagnostic>,
}

/// Reads every policy file under `paths` (as [`crate::policy::load_paths`] finds them), one
/// outcome per document.
pub(crate) fn scan(paths: &[PathBuf]) -> Scanned {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut walk = Walk::default();
    for path in paths {
        collect_files(path, true, &mut walk, &mut files, &mut problems);
    }
    let mut out: Scan = problems
        .into_iter()
        .map(|d| (d.file.clone(), FileScan::Unreadable(d)))
        .collect();
    let mut warnings = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let content = match read_text(&file) {
            Err(d) => FileScan::Unreadable(d),
            Ok(text) => read_documents(&name, &text, &mut warnings),
        };
        out.push((name, content));
    }
    Scanned {
        files: out,
        warnings,
    }
}

fn read_documents(name: &str, text: &str, warnings: &mut Vec<Diagnostic>) -> FileScan {
    let chunks = split_documents(text);
    if chunks.is_empty() {
        return FileScan::Unreadable(Diagnostic {
            file: name.to_owned(),
            line: 1,
            column: 1,
            message: "no YAML document found: expected at least one HealthPolicy".to_owned(),
            policy: None,
        });
    }
    FileScan::Read(
        chunks
            .iter()
            .map(|chunk| match load_document(name, chunk, warnings) {
                Ok(loaded) => Document::Valid(Box::new(loaded)),
                Err(diagnostics) => Document::Invalid {
                    name: diagnostics.iter().find_map(|d| d.policy.clone()),
                    diagnostics,
                },
            })
            .collect(),
    )
}

impl FileSource {
    /// Reads `paths` once and logs what was found (see [`FileSource::rescan`]).
    pub fn load(paths: Vec<PathBuf>) -> Self {
        let mut source = Self {
            paths,
            state: LastGood::default(),
            warned: BTreeSet::new(),
        };
        source.rescan();
        source
    }

    /// The paths given.
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The policies in force now, by name.
    pub fn policies(&self) -> Vec<HealthPolicy> {
        self.state.policies()
    }

    /// Where each policy in force was read.
    pub(crate) fn provenance(&self) -> BTreeMap<String, Provenance> {
        self.state.provenance()
    }

    /// How many policies are enforced from a last good version.
    pub(crate) fn kept_last_good(&self) -> usize {
        self.state.stale()
    }

    /// Reads the files again and merges them in; logs each new problem once (warn, with
    /// `file:line:col`) and each change (info). Returns the merge.
    pub(crate) fn rescan(&mut self) -> Merged {
        let scanned = scan(&self.paths);
        self.take(merge(&self.state, &scanned.files), &scanned.warnings)
    }

    /// Logs a merge (and the warnings not logged before) and makes it the state.
    fn take(&mut self, merged: Merged, warnings: &[Diagnostic]) -> Merged {
        let warned: BTreeSet<String> = warnings.iter().map(Diagnostic::as_warning).collect();
        for w in warnings {
            if !self.warned.contains(&w.as_warning()) {
                warn!(file = %w.file, line = w.line, column = w.column, "{}", w.as_warning());
            }
        }
        self.warned = warned;
        log_merge(&merged);
        self.state = merged.next.clone();
        merged
    }

    /// Keeps `publish` and the registry's provenance up to date until `shutdown`: rescans on
    /// file events (when `how.watch`), every `how.rescan` and whenever `reload` is notified
    /// (SIGHUP). The set is published when it changed, and always after a `reload`.
    pub async fn run(
        mut self,
        publish: Publish,
        registry: Arc<PolicyRegistry>,
        reporter: Arc<dyn ReloadReporter>,
        reload: Arc<Notify>,
        how: Reload,
        shutdown: CancellationToken,
    ) {
        let changed = Arc::new(Notify::new());
        let mut watch = how.watch.then(|| Watch::new(changed.clone()));
        if let Some(w) = &mut watch {
            w.follow(&self.paths);
        }
        registry.set_provenance(self.provenance());
        let started = chrono::Utc::now();
        let mut status = ReloadStatus {
            paths: self.paths.iter().map(|p| p.display().to_string()).collect(),
            last_scan: Some(started),
            trigger: Some("start".to_owned()),
            last_change: Some(started),
            loaded_at: self
                .policies()
                .iter()
                .map(|p| (p.metadata.name.clone(), started))
                .collect(),
            problems: self.state.reported.iter().cloned().collect(),
        };
        registry.set_reload(status.clone());
        // The problems of the first load (logged by it) count too.
        reporter.problems_found(self.state.reported.len());
        reporter.kept_last_good(self.kept_last_good());
        let mut tick = tokio::time::interval(how.rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                () = changed.notified() => Trigger::Watch,
                () = reload.notified() => Trigger::Signal,
                _ = tick.tick() => Trigger::Rescan,
            };
            if trigger == Trigger::Signal {
                info!(paths = ?self.paths, "SIGHUP: reloading the policy files");
            }
            let before = self.policies();
            let paths = self.paths.clone();
            let state = self.state.clone();
            let read = tokio::task::spawn_blocking(move || {
                let scanned = scan(&paths);
                (merge(&state, &scanned.files), scanned.warnings)
            });
            let (merged, warnings) = match read.await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "policy rescan failed; keeping the policies in force");
                    continue;
                }
            };
            let merged = self.take(merged, &warnings);
            reporter.scanned(trigger);
            reporter.problems_found(merged.new_problems.len());
            reporter.kept_last_good(self.kept_last_good());
            registry.set_provenance(self.provenance());
            status = next_status(status, &merged, trigger, chrono::Utc::now());
            registry.set_reload(status.clone());
            let now = self.policies();
            if now != before || trigger == Trigger::Signal {
                publish(now);
            }
            if let Some(w) = &mut watch {
                w.follow(&self.paths);
            }
        }
    }
}

/// The reload status after a scan at `now` that merged into `merged`.
fn next_status(
    mut status: ReloadStatus,
    merged: &Merged,
    trigger: Trigger,
    now: chrono::DateTime<chrono::Utc>,
) -> ReloadStatus {
    let problems: Vec<String> = merged.next.reported.iter().cloned().collect();
    if !merged.changes.is_empty() || problems != status.problems {
        status.last_change = Some(now);
    }
    for change in &merged.changes {
        match change {
            Change::Added(name) | Change::Updated(name) | Change::Fixed(name) => {
                status.loaded_at.insert(name.clone(), now);
            }
            Change::Removed(name) => {
                status.loaded_at.remove(name);
            }
            Change::KeptLastGood(_) => {}
        }
    }
    status.problems = problems;
    status.last_scan = Some(now);
    status.trigger = Some(trigger.as_str().to_owned());
    status
}

fn log_merge(merged: &Merged) {
    for d in &merged.new_problems {
        let kept = merged
            .next
            .in_force
            .values()
            .any(|p| p.problems.contains(d));
        warn!(
            file = %d.file,
            line = d.line,
            column = d.column,
            policy = d.policy.as_deref().unwrap_or("-"),
            keeping_last_good = kept,
            "invalid policy document: {d}"
        );
    }
    for change in &merged.changes {
        match change {
            Change::Added(name) => {
                info!(policy = %name, source = %source(merged, name), "policy added")
            }
            Change::Updated(name) => {
                info!(policy = %name, source = %source(merged, name), "policy updated")
            }
            Change::Fixed(name) => info!(policy = %name, "policy document valid again"),
            Change::Removed(name) => {
                info!(policy = %name, "policy removed: no file defines it any more")
            }
            Change::KeptLastGood(name) => warn!(
                policy = %name,
                source = %source(merged, name),
                "policy {name} keeps its last good version until its document is fixed"
            ),
        }
    }
}

fn source<'a>(merged: &'a Merged, name: &str) -> &'a str {
    merged
        .next
        .in_force
        .get(name)
        .map_or("-", |p| p.source.as_str())
}

/// The notify watcher over the paths' current targets and their parent directories.
struct Watch {
    changed: Arc<Notify>,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    /// What the watches were set on (the canonical targets of the paths), to notice a swap.
    targets: Vec<Option<PathBuf>>,
    /// Set by the watcher when a path itself was created, removed or renamed (a directory
    /// deleted and made again keeps its name, maybe even its inode): watch it again.
    rewatch: Arc<AtomicBool>,
    /// Whether the last attempt failed (warned once, retried on every scan).
    failed: bool,
}

impl Watch {
    fn new(changed: Arc<Notify>) -> Self {
        Self {
            changed,
            debouncer: None,
            targets: Vec::new(),
            rewatch: Arc::default(),
            failed: false,
        }
    }

    /// Sets the watches up again when a path's target changed, a path itself was replaced, or
    /// the last attempt failed.
    fn follow(&mut self, paths: &[PathBuf]) {
        let targets: Vec<Option<PathBuf>> = paths
            .iter()
            .map(|p| std::fs::canonicalize(p).ok())
            .collect();
        let rewatch = self.rewatch.swap(false, Ordering::AcqRel);
        if self.debouncer.is_some() && targets == self.targets && !rewatch {
            return;
        }
        debug!(?targets, rewatch, "watching the policy paths");
        let first = self.debouncer.is_none() && !self.failed && self.targets.is_empty();
        self.debouncer = None;
        match start_watch(paths, &targets, self.changed.clone(), self.rewatch.clone()) {
            Ok(d) => {
                if self.failed {
                    info!("watching the policy files again");
                }
                self.debouncer = Some(d);
                self.failed = false;
                if !first {
                    // What changed between the last scan and the new watches: one more scan.
                    self.changed.notify_one();
                }
            }
            Err(e) => {
                if !self.failed {
                    warn!(error = %e, "cannot watch the policy files; changes are still picked up by the periodic rescan");
                }
                self.failed = true;
            }
        }
        self.targets = targets;
    }
}

fn start_watch(
    paths: &[PathBuf],
    targets: &[Option<PathBuf>],
    changed: Arc<Notify>,
    rewatch: Arc<AtomicBool>,
) -> notify::Result<Debouncer<notify::RecommendedWatcher, RecommendedCache>> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    let mut watches: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for (path, target) in paths.iter().zip(targets) {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if let Some(target) = target {
            let mode = if target.is_dir() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watches.push((target.clone(), mode));
            prefixes.push(target.clone());
        }
        // The parent sees the path itself replaced: a symlink swapped, a file renamed over.
        if let Some(parent) = absolute.parent().filter(|p| p.is_dir()) {
            watches.push((parent.to_path_buf(), RecursiveMode::NonRecursive));
        }
        prefixes.push(absolute);
    }
    let roots = prefixes.clone();
    let relevant = move |p: &Path| prefixes.iter().any(|pre| p.starts_with(pre));
    let mut debouncer = new_debouncer(
        DEBOUNCE,
        Some(DEBOUNCE_TICK),
        move |result: DebounceEventResult| {
            let wake = match &result {
                Ok(events) => events.iter().any(|e| {
                    if replaces(&e.event.kind) && e.event.paths.iter().any(|p| roots.contains(p)) {
                        rewatch.store(true, Ordering::Release);
                    }
                    is_change(&e.event.kind) && e.event.paths.iter().any(|p| relevant(p))
                }),
                Err(errors) => {
                    debug!(?errors, "policy watcher error; rescanning");
                    true
                }
            };
            if wake {
                changed.notify_one();
            }
        },
    )?;
    for (path, mode) in watches {
        debouncer.watch(&path, mode)?;
    }
    Ok(debouncer)
}

/// Whether an event may change what a scan reads: every kind but a read access (an open,
/// or a close without writing: the scan's own reads produce them).
fn is_change(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// Whether an event about a watched path itself means it was replaced (created, removed or
/// renamed), so that its watch must be set up again.
fn replaces(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_accesses_are_no_change() {
        use notify::event::{CreateKind, RemoveKind, RenameMode};
        for (kind, change) in [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (EventKind::Access(AccessKind::Read), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), true),
            (EventKind::Remove(RemoveKind::Any), true),
            (EventKind::Any, true),
        ] {
            assert_eq!(is_change(&kind), change, "{kind:?}");
        }
    }

    #[test]
    fn the_reload_status_notes_when_each_policy_was_read_and_every_problem() {
        let t = |s: i64| chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let merged = |changes: Vec<Change>, problems: &[&str]| Merged {
            next: LastGood {
                in_force: BTreeMap::new(),
                reported: problems.iter().map(|p| p.to_string()).collect(),
            },
            new_problems: Vec::new(),
            changes,
        };
        let start = ReloadStatus {
            last_change: Some(t(0)),
            loaded_at: [("a".to_owned(), t(0)), ("b".to_owned(), t(0))].into(),
            ..ReloadStatus::default()
        };
        // (what the scan merged, last change, loaded_at of a, of b, problems)
        let bad = "x.yaml:1:1: error: bad";
        let cases = [
            (merged(vec![], &[]), t(0), Some(t(0)), Some(t(0)), 0),
            (merged(vec![], &[bad]), t(9), Some(t(0)), Some(t(0)), 1),
            (
                merged(vec![Change::Updated("a".into())], &[]),
                t(9),
                Some(t(9)),
                Some(t(0)),
                0,
            ),
            (
                merged(vec![Change::KeptLastGood("a".into())], &[bad]),
                t(9),
                Some(t(0)),
                Some(t(0)),
                1,
            ),
            (
                merged(vec![Change::Removed("b".into())], &[]),
                t(9),
                Some(t(0)),
                None,
                0,
            ),
        ];
        for (i, (m, change, a, b, problems)) in cases.into_iter().enumerate() {
            let next = next_status(start.clone(), &m, Trigger::Watch, t(9));
            assert_eq!(next.last_scan, Some(t(9)), "case {i}");
            assert_eq!(next.trigger.as_deref(), Some("watch"), "case {i}");
            assert_eq!(next.last_change, Some(change), "case {i}");
            assert_eq!(next.loaded_at.get("a").copied(), a, "case {i}");
            assert_eq!(next.loaded_at.get("b").copied(), b, "case {i}");
            assert_eq!(next.problems.len(), problems, "case {i}");
        }
    }

    #[test]
    fn a_scan_names_each_document_of_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata: {name: one}\nspec:\n  selector: {matchAll: true}\n  probes: {exit: {}}\n";
        let text = format!(
            "{good}---\nnot: [closed\n---\n{}",
            good.replace("one", "two")
        );
        std::fs::write(dir.path().join("a.yaml"), text).unwrap();
        std::fs::write(dir.path().join("empty.yml"), "# nothing\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let scan = scan(&[dir.path().to_path_buf()]).files;
        assert_eq!(scan.len(), 2, "{scan:?}");
        let FileScan::Read(docs) = &scan[0].1 else {
            panic!("{scan:?}")
        };
        assert!(matches!(&docs[0], Document::Valid(l) if l.policy.metadata.name == "one"));
        assert!(
            matches!(&docs[1], Document::Invalid { name: None, diagnostics } if diagnostics[0].line == 8),
            "{docs:?}"
        );
        assert!(matches!(&docs[2], Document::Valid(l) if l.policy.metadata.name == "two"));
        assert!(
            matches!(&scan[1].1, FileScan::Unreadable(d) if d.message.contains("no YAML document"))
        );
    }
}
