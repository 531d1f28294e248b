//! How the CLI shows a long operation's [`Progress`]: on a terminal, one indicatif bar per
//! phase (bytes or objects done of the expected total, rate and ETA; a spinner when no
//! total is known), replaced by a line that stays when the phase ends; elsewhere (a pipe, a CI
//! log, a systemd journal) one plain line per phase on stderr when it ends, with what it
//! did and how fast. The operation only writes numbers; everything about drawing is here.
//!
//! The bars live in the [`MultiProgress`] that the log writer suspends around each line
//! (`logging::init`), so log lines never tear a bar.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use crate::backup::progress::{Ended, Phase, Progress, Seen, Unit};

/// How often the bar is redrawn from the counters.
const TICK: Duration = Duration::from_millis(100);

/// The view of one running operation; [`Shown::finish`] when it returns.
pub(super) struct Shown {
    progress: Arc<Progress>,
    view: Arc<std::sync::Mutex<View>>,
    ticker: tokio::task::JoinHandle<()>,
}

/// Starts showing `progress` of operation `what` (e.g. `backup`).
pub(super) fn show(bars: &MultiProgress, what: &'static str, progress: &Arc<Progress>) -> Shown {
    let view = Arc::new(std::sync::Mutex::new(View {
        what,
        bars: bars.clone(),
        bar: None,
        generation: None,
    }));
    let ticker = {
        let (view, progress) = (view.clone(), progress.clone());
        tokio::spawn(async move {
            // Ends when `finish` aborts it.
            loop {
                if let Ok(mut v) = view.lock() {
                    v.update(&progress);
                }
                tokio::time::sleep(TICK).await;
            }
        })
    };
    Shown {
        progress: progress.clone(),
        view,
        ticker,
    }
}

impl Shown {
    /// Ends the last phase and shows it; call when the operation returned.
    pub(super) fn finish(self) {
        self.ticker.abort();
        self.progress.end();
        if let Ok(mut v) = self.view.lock() {
            v.update(&self.progress);
        }
    }
}

struct View {
    what: &'static str,
    bars: MultiProgress,
    /// The current phase's bar (terminal only).
    bar: Option<ProgressBar>,
    generation: Option<u64>,
}

impl View {
    fn update(&mut self, progress: &Progress) {
        let seen = progress.seen();
        let ended = progress.take_ended();
        let terminal = !self.bars.is_hidden();
        for e in &ended {
            let line = format!("{}: {}", self.label(&e.phase), summary(e));
            if terminal {
                // The bar gives way to a line that stays (also for a phase that began and
                // ended between two looks, which never had a bar).
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let _ = self.bars.println(line);
            } else {
                eprintln!("{line}");
            }
        }
        if !terminal {
            return;
        }
        if self.generation != Some(seen.generation) {
            self.generation = Some(seen.generation);
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            self.bar = seen.phase.as_ref().map(|p| self.start_bar(p));
        }
        if let Some(bar) = &self.bar {
            draw(bar, &seen);
        }
    }

    /// `backup`, `drill replay to ...`, `restore of backup ...` (not `restore restore of`).
    fn label(&self, phase: &Phase) -> String {
        if phase.name.starts_with(self.what) {
            phase.name.clone()
        } else {
            format!("{} {}", self.what, phase.name)
        }
    }

    fn start_bar(&self, phase: &Phase) -> ProgressBar {
        let template = match (phase.unit, phase.total) {
            (Unit::Bytes, Some(_)) => {
                "{prefix:.bold} [{bar:25.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}"
            }
            (Unit::Bytes, None) => {
                "{spinner} {prefix:.bold} {bytes} {binary_bytes_per_sec} [{elapsed}] {msg}"
            }
            (Unit::Objects, Some(_)) => {
                "{prefix:.bold} [{bar:25.cyan/blue}] {human_pos}/{human_len} objects {per_sec} ETA {eta} {msg}"
            }
            (Unit::Objects, None) => "{spinner} {prefix:.bold} [{elapsed}] {msg}",
        };
        let bar = match phase.total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(style(template));
        bar.set_prefix(self.label(phase));
        self.bars.add(bar)
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn draw(bar: &ProgressBar, seen: &Seen) {
    // The expected total is an estimate (a database grows while it is backed up).
    if bar.length().is_some_and(|len| seen.done > len) {
        bar.set_length(seen.done);
    }
    bar.set_position(seen.done);
    if seen.stored > 0 {
        bar.set_message(format!("({} stored)", HumanBytes(seen.stored)));
    }
    bar.tick();
}

/// One line for an ended phase: what it did, of what was expected, and how fast.
fn summary(e: &Ended) -> String {
    let rate = e.done as f64 / e.seconds.max(0.001);
    match e.phase.unit {
        Unit::Bytes if e.done == 0 => format!("{:.1}s", e.seconds),
        Unit::Bytes => {
            let of = e
                .phase
                .total
                .map(|t| format!(" of {} expected", HumanBytes(t)))
                .unwrap_or_default();
            format!(
                "{}{of} in {:.1}s ({}/s)",
                HumanBytes(e.done),
                e.seconds,
                HumanBytes(rate as u64)
            )
        }
        Unit::Objects => match e.phase.total {
            Some(t) => format!("{} of {t} objects in {:.1}s", e.done, e.seconds),
            None => format!("{:.1}s", e.seconds),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_line_says_what_was_done_of_what_was_expected() {
        let ended = |unit, total, done, seconds| Ended {
            phase: Phase {
                name: "x".into(),
                unit,
                total,
            },
            done,
            seconds,
        };
        assert_eq!(
            summary(&ended(Unit::Bytes, Some(2 << 20), 3 << 20, 2.0)),
            "3.00 MiB of 2.00 MiB expected in 2.0s (1.50 MiB/s)"
        );
        assert_eq!(
            summary(&ended(Unit::Objects, Some(12), 12, 0.25)),
            "12 of 12 objects in 0.2s"
        );
        assert_eq!(summary(&ended(Unit::Objects, None, 0, 3.04)), "3.0s");
    }
}
