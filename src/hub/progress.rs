//! Progress of a long `pool_map` on stderr: a bar on a terminal, plain lines when asked for while
//! stderr is piped, nothing otherwise.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A map shorter than this never shows a bar on its own.
const SHOW_AFTER: Duration = Duration::from_millis(500);
/// How often plain progress lines are written.
const LINE_EVERY: Duration = Duration::from_secs(1);

enum Display {
    Off,
    /// Not yet shown: a terminal bar appears once the map has run [`SHOW_AFTER`].
    Pending,
    Bar(ProgressBar),
    Lines {
        last: Instant,
    },
}

pub(crate) struct MapProgress {
    display: Display,
    total: usize,
    done: usize,
    started: Instant,
}

impl MapProgress {
    /// `asked`: the `progress` option (`None` when the script did not say).
    pub(crate) fn new(total: usize, asked: Option<bool>) -> MapProgress {
        let terminal = std::io::stderr().is_terminal();
        let display = match (asked, terminal) {
            (Some(false), _) | (None, false) => Display::Off,
            (None, true) => Display::Pending,
            (Some(true), true) => Display::Bar(bar(total)),
            (Some(true), false) => Display::Lines {
                last: Instant::now(),
            },
        };
        MapProgress {
            display,
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    /// `n` more items have results.
    pub(crate) fn advance(&mut self, n: usize) {
        self.done += n;
        if let Display::Bar(bar) = &self.display {
            bar.inc(n as u64);
        }
        self.tick();
    }

    /// Called regularly: shows a pending bar once the map is long, writes a due line.
    pub(crate) fn tick(&mut self) {
        let rate = self.rate();
        match &mut self.display {
            Display::Pending if self.started.elapsed() >= SHOW_AFTER => {
                let bar = bar(self.total);
                bar.inc(self.done as u64);
                self.display = Display::Bar(bar);
            }
            Display::Lines { last } if last.elapsed() >= LINE_EVERY => {
                *last = Instant::now();
                self.line();
            }
            Display::Bar(bar) => bar.set_message(format!("{rate:.0} items/s")),
            _ => {}
        }
    }

    fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// The bar, while one is shown, so other output can be written around it.
    pub(crate) fn bar(&self) -> Option<&ProgressBar> {
        match &self.display {
            Display::Bar(bar) => Some(bar),
            _ => None,
        }
    }

    /// The map ended: the bar goes away; plain output gets a last line.
    pub(crate) fn finish(&mut self) {
        match &self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines { .. } => self.line(),
            _ => {}
        }
        self.display = Display::Off;
    }

    fn line(&self) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = self.rate();
        let eta = (self.total - self.done.min(self.total)) as f64 / rate.max(1e-9);
        let line = format!(
            "pool_map: {}/{} items, {:.0}/s, {:.1}s elapsed, ETA {:.1}s\n",
            self.done, self.total, rate, secs, eta
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

fn bar(total: usize) -> ProgressBar {
    let style =
        ProgressStyle::with_template("pool_map {bar:40} {pos}/{len} items  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
        .with_style(style)
}
