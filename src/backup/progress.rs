//! How far a long operation (backup, restore, drill, off-site copy, retention) has come, as
//! data: the operation writes it, whoever shows it reads it from another task (the CLI
//! draws a bar on a terminal and a line per phase elsewhere; the daemon ignores it). An
//! operation moves through named phases; each phase counts units (bytes or objects) against
//! an expected total when one is known beforehand (the database size before a backup,
//! `backup.json`'s raw size before a restore, the plan before retention deletes).
//!
//! The counters are atomics, so the operation pays one relaxed add per chunk; a phase change
//! is rare and takes a mutex. Readers never block the operation for longer than a copy of
//! the phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Objects,
}

/// One step of an operation: its name, what it counts and how many it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub unit: Unit,
    /// The expected total, when known beforehand.
    pub total: Option<u64>,
}

/// A phase that ended: what it counted and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub phase: Phase,
    pub done: u64,
    pub seconds: f64,
}

/// Progress of one running operation; share it in an `Arc` with the task that shows it.
#[derive(Debug, Default)]
pub struct Progress {
    /// The current phase and when it began.
    phase: Mutex<Option<(Phase, Instant)>>,
    /// Phases that ended and nobody took yet ([`Progress::take_ended`]).
    ended: Mutex<Vec<Ended>>,
    /// Bumped on every phase change, so a reader notices a phase that began and ended
    /// between two of its looks.
    generation: AtomicU64,
    /// Units done in the current phase.
    pub done: AtomicU64,
    /// Bytes handed to the store so far (a backup's compressed output), across phases.
    pub stored: AtomicU64,
}

/// What a reader sees at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub generation: u64,
    pub phase: Option<Phase>,
    pub done: u64,
    pub stored: u64,
}

impl Progress {
    /// Ends the current phase and starts phase `name`, counting `unit` against `total`
    /// from zero.
    pub fn begin(&self, name: impl Into<String>, unit: Unit, total: Option<u64>) {
        let phase = Phase {
            name: name.into(),
            unit,
            total,
        };
        self.replace(Some((phase, Instant::now())));
    }

    /// Ends the current phase (the operation is over).
    pub fn end(&self) {
        self.replace(None);
    }

    fn replace(&self, next: Option<(Phase, Instant)>) {
        let Ok(mut current) = self.phase.lock() else {
            return;
        };
        if let Some((phase, began)) = current.take() {
            let done = self.done.load(Ordering::Relaxed);
            let seconds = began.elapsed().as_secs_f64();
            if let Ok(mut ended) = self.ended.lock() {
                // Bounded: an operation has a handful of phases and the reader takes them.
                if ended.len() < 64 {
                    ended.push(Ended {
                        phase,
                        done,
                        seconds,
                    });
                }
            }
        }
        *current = next;
        self.done.store(0, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The phases that ended since the last call, oldest first.
    pub fn take_ended(&self) -> Vec<Ended> {
        self.ended
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// Counts `n` more units done in the current phase.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the units done in the current phase.
    pub fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }

    /// The current phase and counters.
    pub fn seen(&self) -> Seen {
        let phase = self
            .phase
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|(phase, _)| phase.clone()));
        Seen {
            generation: self.generation.load(Ordering::Acquire),
            phase,
            done: self.done.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
        }
    }
}

/// A reader that counts the bytes passing through it into a [`Progress`].
#[derive(Debug)]
pub struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<'a, R> Counting<'a, R> {
    pub fn new(inner: R, progress: &'a Progress) -> Self {
        Self { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_change_resets_the_count_and_is_seen_by_its_generation() {
        let p = Progress::default();
        assert_eq!(p.seen().phase, None);
        p.begin("restore", Unit::Bytes, Some(100));
        p.add(30);
        p.add(12);
        let a = p.seen();
        assert_eq!(a.done, 42);
        assert_eq!(a.phase.as_ref().map(|p| p.total), Some(Some(100)));
        p.begin("replay", Unit::Bytes, None);
        let b = p.seen();
        assert_eq!(b.done, 0);
        assert!(b.generation > a.generation);
        assert_eq!(b.phase.map(|p| p.name), Some("replay".to_string()));
        let mut counted = Counting::new(&b"0123456789"[..], &p);
        std::io::copy(&mut counted, &mut std::io::sink()).unwrap();
        assert_eq!(p.seen().done, 10);
        p.end();
        // Every phase that ended, with its final count, however fast it went.
        let ended = p.take_ended();
        let names: Vec<(&str, u64)> = ended
            .iter()
            .map(|e| (e.phase.name.as_str(), e.done))
            .collect();
        assert_eq!(names, [("restore", 42), ("replay", 10)]);
        assert!(p.take_ended().is_empty());
        assert_eq!(p.seen().phase, None);
    }
}
