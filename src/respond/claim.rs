//! The claim on a container for one action: this process's acting mark, the shared in-flight
//! lock and, when the policy has one, a slot of its fleet budget. Released on drop.

use std::sync::Arc;
use std::time::Duration;

use crate::observe::acting::{Acting, ActingGuard};
use crate::store::{StateStore, StoreError};

/// Why no claim could be taken.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// Another action on the container is in flight (this process or another).
    InFlight,
    /// The policy's fleet budget is spent.
    BudgetSpent,
    /// The lock could not be read or written.
    LockUnavailable(StoreError),
    /// The fleet budget could not be read or written.
    BudgetUnavailable(StoreError),
}

/// What [`Claim::take`] needs.
pub(crate) struct ClaimRequest<'a> {
    /// The container id (this process's acting mark).
    pub id: &'a str,
    /// The shared in-flight lock's key ([`crate::model::safety::lock_key`]).
    pub key: &'a str,
    /// This process's lock owner id.
    pub owner: &'a str,
    /// How long the lock lives if this process dies.
    pub ttl: Duration,
    /// `(policy, max actions, per, decision id)` when the policy has a fleet budget.
    pub budget: Option<(&'a str, u32, Duration, &'a str)>,
}

/// A held claim. [`Claim::release`] ends it after an action (its events stay attributed to
/// HemoStat for a grace period), [`Claim::abandon`] when nothing was done; dropping it
/// unlocks in the background and keeps the grace period.
#[must_use]
pub(crate) struct Claim<'a> {
    acting: Option<ActingGuard<'a>>,
    store: Arc<dyn StateStore>,
    key: String,
    owner: String,
    locked: bool,
}

impl<'a> Claim<'a> {
    /// Takes the acting mark, then the lock, then the budget; whatever was taken is given back
    /// when a later step fails.
    pub(crate) async fn take(
        acting: &'a Acting,
        store: &Arc<dyn StateStore>,
        req: ClaimRequest<'_>,
    ) -> Result<Claim<'a>, ClaimError> {
        // One action per container within this process first (the shared lock below is
        // re-entrant for this process's owner id), then across processes.
        let guard = acting.try_begin(req.id).ok_or(ClaimError::InFlight)?;
        let mut claim = Claim {
            acting: Some(guard),
            store: Arc::clone(store),
            key: req.key.to_owned(),
            owner: req.owner.to_owned(),
            locked: false,
        };
        match store.try_lock(req.key, req.owner, req.ttl).await {
            Ok(true) => claim.locked = true,
            Ok(false) => {
                claim.abandon().await;
                return Err(ClaimError::InFlight);
            }
            Err(e) => {
                claim.abandon().await;
                return Err(ClaimError::LockUnavailable(e));
            }
        }
        if let Some((policy, max, per, decision_id)) = req.budget {
            let refusal = match store.take_fleet_budget(policy, max, per, decision_id).await {
                Ok(true) => None,
                Ok(false) => Some(ClaimError::BudgetSpent),
                Err(e) => Some(ClaimError::BudgetUnavailable(e)),
            };
            if let Some(refusal) = refusal {
                claim.abandon().await;
                return Err(refusal);
            }
        }
        Ok(claim)
    }

    /// Nothing was done: unlocks and forgets the acting mark without a grace period.
    pub(crate) async fn abandon(mut self) {
        self.unlock().await;
        if let Some(guard) = self.acting.take() {
            guard.abandon();
        }
    }

    /// The action is over: unlocks; its events stay attributed for the grace period.
    pub(crate) async fn release(mut self) {
        self.unlock().await;
        self.acting.take();
    }

    async fn unlock(&mut self) {
        if std::mem::take(&mut self.locked) {
            let _ = self.store.unlock(&self.key, &self.owner).await;
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.locked
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (store, key, owner) = (
                Arc::clone(&self.store),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.owner),
            );
            runtime.spawn(async move {
                let _ = store.unlock(&key, &owner).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn request<'a>(budget: Option<(&'a str, u32, Duration, &'a str)>) -> ClaimRequest<'a> {
        ClaimRequest {
            id: "c1",
            key: "n/c1",
            owner: "me",
            ttl: Duration::from_secs(60),
            budget,
        }
    }

    #[tokio::test]
    async fn a_claim_excludes_a_second_one_until_released_or_dropped() {
        let acting = Acting::default();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::ephemeral());
        let first = Claim::take(&acting, &store, request(None)).await.unwrap();
        assert!(matches!(
            Claim::take(&acting, &store, request(None)).await,
            Err(ClaimError::InFlight)
        ));
        assert!(
            !store
                .try_lock("n/c1", "other", Duration::from_secs(1))
                .await
                .unwrap()
        );
        first.release().await;
        assert!(
            acting.is_ours("c1"),
            "the grace period attributes late events"
        );
        assert!(
            store
                .try_lock("n/c1", "other", Duration::from_secs(1))
                .await
                .unwrap()
        );
        store.unlock("n/c1", "other").await.unwrap();

        let dropped = Claim::take(&acting, &store, request(None)).await.unwrap();
        drop(dropped);
        tokio::task::yield_now().await;
        assert!(
            store
                .try_lock("n/c1", "other", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_spent_budget_gives_back_the_lock_and_the_acting_mark() {
        let acting = Acting::default();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::ephemeral());
        let per = Duration::from_secs(3600);
        Claim::take(&acting, &store, request(Some(("p", 1, per, "d1"))))
            .await
            .unwrap()
            .release()
            .await;
        let spent = Claim::take(&acting, &store, request(Some(("p", 1, per, "d2")))).await;
        assert!(matches!(spent, Err(ClaimError::BudgetSpent)));
        assert!(
            store
                .try_lock("n/c1", "other", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }
}
