//! The reconcile loop: triggers feed a de-duplicating, per-container-exclusive work queue.

pub mod queue;
