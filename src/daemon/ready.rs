//! The readiness latch behind `/readyz`. The daemon is ready when every named condition has
//! been met once: the configuration was loaded, a scrape reached PostgreSQL, and the location
//! of every repository was checked and allowed by the residency policy. Conditions latch:
//! once met they stay met, because Kubernetes takes an unready pod out of its Service, and a
//! metrics sidecar that vanishes when its database blips would hide the very outage it
//! should show. Each condition has one writer (the warm-up and the residency loop), and
//! `/readyz` lists the unmet ones in its body.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// One thing the daemon waits for before it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The configuration file was read and validated.
    ConfigLoaded,
    /// A scrape reached PostgreSQL (`pg_up 1`).
    FirstScrape,
    /// The repository with this `store` label is where the residency policy allows.
    Residency(&'static str),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::ConfigLoaded => f.write_str("configuration loaded"),
            Condition::FirstScrape => f.write_str("a successful scrape of PostgreSQL"),
            Condition::Residency(store) => {
                write!(f, "the residency check of the {store} repository")
            }
        }
    }
}

/// The named conditions and whether each was met, plus the audit log's health, which is
/// not a latch: an audit sink that fails makes the daemon unready until it writes again.
#[derive(Debug)]
pub struct Readiness {
    conditions: Vec<(Condition, AtomicBool)>,
    audit: std::sync::OnceLock<crate::audit::AuditLog>,
}

impl Readiness {
    /// A latch waiting for `conditions`.
    pub fn new(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Self {
            conditions: conditions
                .into_iter()
                .map(|c| (c, AtomicBool::new(false)))
                .collect(),
            audit: std::sync::OnceLock::new(),
        }
    }

    /// Reports `audit`'s failures (a sink failing, lines dropped) as unmet until it recovers.
    pub fn watch_audit(&self, audit: crate::audit::AuditLog) {
        let _ = self.audit.set(audit);
    }

    /// Marks `condition` met (for good). A condition the latch does not wait for is ignored.
    pub fn met(&self, condition: Condition) {
        for (c, done) in &self.conditions {
            if *c == condition {
                done.store(true, Ordering::Release);
            }
        }
    }

    /// Whether `condition` has been met.
    pub fn is_met(&self, condition: Condition) -> bool {
        self.conditions
            .iter()
            .any(|(c, done)| *c == condition && done.load(Ordering::Acquire))
    }

    /// The conditions not met yet, in the order they were named.
    pub fn unmet(&self) -> Vec<Condition> {
        self.conditions
            .iter()
            .filter(|(_, done)| !done.load(Ordering::Acquire))
            .map(|(c, _)| *c)
            .collect()
    }
}

impl crate::http::Readiness for Readiness {
    fn unmet(&self) -> Vec<String> {
        let mut unmet: Vec<String> = Readiness::unmet(self)
            .iter()
            .map(ToString::to_string)
            .collect();
        if let Some(failure) = self.audit.get().and_then(|a| a.health()) {
            unmet.push(format!("a healthy audit log ({failure})"));
        }
        unmet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_met_and_it_stays_met() {
        let r = Readiness::new([
            Condition::ConfigLoaded,
            Condition::FirstScrape,
            Condition::Residency("primary"),
        ]);
        r.met(Condition::ConfigLoaded);
        r.met(Condition::FirstScrape);
        assert_eq!(r.unmet(), vec![Condition::Residency("primary")]);
        // Another store's check does not stand in for this one.
        r.met(Condition::Residency("offsite"));
        assert_eq!(r.unmet(), vec![Condition::Residency("primary")]);
        r.met(Condition::Residency("primary"));
        assert!(r.unmet().is_empty());
        r.met(Condition::FirstScrape);
        assert!(r.unmet().is_empty());
        assert_eq!(
            Condition::Residency("primary").to_string(),
            "the residency check of the primary repository"
        );
    }
}
