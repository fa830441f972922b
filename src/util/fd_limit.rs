//! The process's open-file limit: raised to what the system allows, and how many descriptors may be kept for caching.

/// Descriptors kept free for everything that is not a cache: the HTTP connection cap, the
/// engine's and Redis's connections, policy and state files, the stats-API fallback.
pub const RESERVED: u64 = 2048;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a service manager often starts a
/// process at 1024 with a hard limit far above) and returns the soft limit now in force.
pub fn raise_to_hard() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The soft open-file limit in force (`u64::MAX` when it cannot be read: no limit known).
pub fn soft_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(u64::MAX, |(soft, _)| soft)
}

/// How many descriptors a cache may hold under a soft limit of `soft`: all but [`RESERVED`].
pub fn cache_budget(soft: u64) -> usize {
    usize::try_from(soft.saturating_sub(RESERVED)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_gets_what_the_limit_leaves_beyond_the_reserve() {
        // (soft limit, budget)
        let cases = [
            (1024, 0),
            (2048, 0),
            (20_000, 17_952),
            (1 << 20, (1 << 20) - 2048),
        ];
        for (soft, want) in cases {
            assert_eq!(cache_budget(soft), want, "soft limit {soft}");
        }
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (_, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
        let soft = raise_to_hard().expect("raise");
        assert!(soft >= soft_limit().min(hard), "{soft}");
        assert_eq!(soft_limit(), soft);
    }
}
