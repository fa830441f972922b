//! HemoStat keeps Docker containers healthy inside hard safety limits.
