//! The merged profile of a run, as a host receives it: function rows, map rows and folded stacks,
//! and the cProfile-style table they print as.

use std::{collections::HashMap, fmt, time::Duration};

use super::record::{Frame, Recorded, Totals, Work, WorkTimes};

/// Where each script function is written: `(name, arity)` to `(file, line)`.
pub(crate) type Sources = HashMap<(String, u32), (String, usize)>;

/// One `pool_map`, `pool_map_unordered` or `pool_submit` call, as the main process saw it.
#[derive(Debug, Clone)]
pub(crate) struct MapCall {
    pub(crate) builtin: &'static str,
    /// The function it ran.
    pub(crate) function: Frame,
    /// Where it was called, its own frame last.
    pub(crate) at: Vec<Frame>,
    pub(crate) work: Work,
    pub(crate) wall_ns: u64,
    pub(crate) workers: usize,
}

/// How [`Profile::table`] orders function rows (always descending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProfileSort {
    /// By number of calls (`--profile-sort calls`).
    Calls,
    /// By time in the function itself (`--profile-sort tottime`).
    OwnTime,
    /// By time in the function and what it called (`--profile-sort cumtime`, the default).
    #[default]
    CumulativeTime,
}

impl std::str::FromStr for ProfileSort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "calls" | "ncalls" => Ok(ProfileSort::Calls),
            "tottime" => Ok(ProfileSort::OwnTime),
            "cumtime" | "cumulative" => Ok(ProfileSort::CumulativeTime),
            other => Err(format!(
                "unknown profile sort `{other}` (known: calls, tottime, cumtime)"
            )),
        }
    }
}

/// One script function's row, summed over every process of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionStats {
    /// The function's name; `<closure>` for a closure.
    pub function: String,
    /// The script (or standard library module) it is written in.
    pub file: String,
    /// The line its body starts on.
    pub line: usize,
    /// Every call, recursive ones included.
    pub calls: u64,
    /// Calls made while the function was not already running (cProfile's primitive calls).
    pub primitive_calls: u64,
    /// Time in the function itself (native functions it called included, script functions not).
    pub own_time: Duration,
    /// Time from each outermost call to its return.
    pub cumulative_time: Duration,
    /// Calls that ran compiled by the fast tier.
    pub compiled_calls: u64,
}

impl FunctionStats {
    /// `file:line(function)`, as cProfile names a row.
    pub fn label(&self) -> String {
        format!("{}:{}({})", self.file, self.line, self.function)
    }
}

/// The calls of one builtin that ran a function on workers, from one place, summed.
#[derive(Debug, Clone, PartialEq)]
pub struct MapStats {
    /// `pool_map`, `pool_map_unordered` or `pool_submit`.
    pub builtin: String,
    /// The function the workers ran (`file:line(name)`, or a native function's name).
    pub function: String,
    /// The function that called the builtin (`file:line(name)`, or `file(<main>)`).
    pub called_from: String,
    /// How many times the builtin was called there.
    pub calls: u64,
    /// Items run (calls, for `pool_submit`).
    pub items: u64,
    /// The most workers one call used.
    pub workers: usize,
    /// Time from each call to its last result, summed.
    pub wall: Duration,
    /// Time workers spent running the function, summed over workers.
    pub busy: Duration,
    /// Time workers spent turning items and results into messages and sending them.
    pub moving: Duration,
    /// The quickest item.
    pub item_min: Duration,
    /// The median item (of at most the first 100,000 items per worker).
    pub item_median: Duration,
    /// The slowest item.
    pub item_max: Duration,
}

/// What a profiled run measured, over the main process and every worker.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let got = Arc::new(Mutex::new(None));
/// let sink = got.clone();
/// let runtime = mpscript::Runtime::builder()
///     .profile(move |profile: &mpscript::Profile| *sink.lock().unwrap() = Some(profile.clone()))
///     .build();
/// runtime.run("fib.rhai", "fn fib(n) { if n < 2 { n } else { fib(n-1) + fib(n-2) } }\nfib(10)", &[]).unwrap();
/// let profile = got.lock().unwrap().take().unwrap();
/// let fib = profile.functions.iter().find(|f| f.function == "fib").unwrap();
/// assert_eq!((fib.calls, fib.primitive_calls, fib.line), (177, 1, 1));
/// assert!(profile.table(mpscript::ProfileSort::Calls).contains("177/1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// The run's wall time.
    pub total: Duration,
    /// How many processes reported (the main one included).
    pub processes: usize,
    /// Workers that ended without reporting (killed, or dead): their calls are missing.
    pub unreported: usize,
    /// One row per script function that was called.
    pub functions: Vec<FunctionStats>,
    /// One row per place that called `pool_map`, `pool_map_unordered` or `pool_submit`.
    pub maps: Vec<MapStats>,
    /// Call paths (`main;pool_map;is_prime`) and the microseconds spent in their last frame.
    pub stacks: Vec<(String, u64)>,
}

/// Names frames as the main process knows them.
pub(crate) struct Labels<'s> {
    pub(crate) sources: &'s Sources,
    /// The main script's name, for its top level.
    pub(crate) script: &'s str,
}

impl Labels<'_> {
    /// Where `name` with `arity` parameters is written; a map's item count is a guess for a
    /// function given its arguments spread, so any arity of the name will do then.
    fn place(&self, name: &str, arity: u32) -> Option<(String, usize)> {
        self.sources
            .get(&(name.to_string(), arity))
            .or_else(|| {
                let mut places = self.sources.iter().filter(|((n, _), _)| n == name);
                places.next().map(|(_, place)| place)
            })
            .cloned()
    }

    fn function(name: &str) -> String {
        match name.starts_with("anon$") {
            true => "<closure>".into(),
            false => name.into(),
        }
    }

    /// `file:line(name)`.
    fn row(&self, frame: &Frame) -> String {
        match frame {
            Frame::Script { name, arity } => match self.place(name, *arity) {
                Some((file, line)) => format!("{file}:{line}({})", Self::function(name)),
                None => name.clone(), // a native function
            },
            Frame::Builtin(name) => name.clone(),
        }
    }

    /// A folded-stack frame: the function's name, or `<closure>@file:line`.
    fn folded(&self, frame: &Frame) -> String {
        match frame {
            Frame::Script { name, arity } if name.starts_with("anon$") => {
                let (file, line) = self.place(name, *arity).unwrap_or_default();
                format!("<closure>@{file}:{line}")
            }
            Frame::Script { name, .. } | Frame::Builtin(name) => name.clone(),
        }
        .replace([';', ' '], "_")
    }

    /// The innermost script function of `at` before its builtin frame.
    fn caller(&self, at: &[Frame]) -> String {
        at.iter()
            .rev()
            .find(|f| matches!(f, Frame::Script { .. }))
            .map_or_else(|| format!("{}(<main>)", self.script), |f| self.row(f))
    }
}

impl Profile {
    /// Merges the main process's record, the workers' and the main process's view of its maps.
    pub(crate) fn assemble(
        total: Duration,
        records: Vec<Recorded>,
        unreported: usize,
        maps: &[MapCall],
        labels: &Labels,
    ) -> Profile {
        let processes = records.len();
        let mut functions: HashMap<Frame, Totals> = HashMap::new();
        let mut stacks: HashMap<String, u64> = HashMap::new();
        let mut work: HashMap<Work, Vec<WorkTimes>> = HashMap::new();
        for record in records {
            for (frame, totals) in record.functions {
                functions.entry(frame).or_default().add(&totals);
            }
            for (path, ns) in record.stacks {
                let names: Vec<String> = path.iter().map(|f| labels.folded(f)).collect();
                *stacks.entry(names.join(";")).or_default() += ns;
            }
            for times in record.work {
                work.entry(times.work).or_default().push(times);
            }
        }
        let functions = functions
            .into_iter()
            .filter_map(|(frame, t)| function_stats(&frame, &t, labels))
            .collect();
        let mut stacks: Vec<(String, u64)> = stacks
            .into_iter()
            .map(|(path, ns)| (path, ns / 1000))
            .filter(|(_, us)| *us > 0)
            .collect();
        stacks.sort();
        Profile {
            total,
            processes,
            unreported,
            functions,
            maps: map_stats(maps, &work, labels),
            stacks,
        }
    }

    /// The cProfile-style table: a header, one row per function sorted by `sort`, then one row
    /// per place that ran a map or submitted calls.
    pub fn table(&self, sort: ProfileSort) -> String {
        let mut out = String::new();
        self.write_table(&mut out, sort)
            .expect("writing to a String does not fail");
        out
    }

    /// Folded stacks, one `frame;frame;frame microseconds` line per call path: what
    /// `flamegraph.pl`, `inferno-flamegraph` and speedscope read.
    pub fn folded(&self) -> String {
        self.stacks
            .iter()
            .map(|(path, us)| format!("{path} {us}\n"))
            .collect()
    }

    /// The folded stacks drawn as a flame graph: an SVG file any browser opens.
    pub fn flamegraph(&self, title: &str) -> String {
        super::flame::svg(&self.stacks, title)
    }

    fn write_table(&self, out: &mut impl fmt::Write, sort: ProfileSort) -> fmt::Result {
        let calls: u64 = self.functions.iter().map(|f| f.calls).sum();
        let primitive: u64 = self.functions.iter().map(|f| f.primitive_calls).sum();
        let processes = match self.processes {
            1 => "1 process".to_string(),
            n => format!("{n} processes"),
        };
        write!(out, "{calls:>9} function calls")?;
        if primitive != calls {
            write!(out, " ({primitive} primitive calls)")?;
        }
        writeln!(
            out,
            " in {:.3} seconds, over {processes}",
            self.total.as_secs_f64()
        )?;
        if self.unreported > 0 {
            writeln!(
                out,
                "   ({} worker(s) ended without reporting; their calls are missing)",
                self.unreported
            )?;
        }
        let order = match sort {
            ProfileSort::Calls => "call count",
            ProfileSort::OwnTime => "internal time",
            ProfileSort::CumulativeTime => "cumulative time",
        };
        writeln!(out, "\n   Ordered by: {order}\n")?;
        writeln!(
            out,
            "   ncalls  tottime  percall  cumtime  percall filename:lineno(function)"
        )?;
        for f in self.sorted(sort) {
            write_function(out, f)?;
        }
        if self.functions.iter().any(|f| f.compiled_calls > 0) {
            writeln!(out, "\n   [fast]: calls that ran compiled by the fast tier")?;
        }
        if !self.maps.is_empty() {
            write_maps(out, &self.maps)?;
        }
        Ok(())
    }

    fn sorted(&self, sort: ProfileSort) -> Vec<&FunctionStats> {
        let mut rows: Vec<&FunctionStats> = self.functions.iter().collect();
        rows.sort_by(|a, b| {
            let by = match sort {
                ProfileSort::Calls => b.calls.cmp(&a.calls),
                ProfileSort::OwnTime => b.own_time.cmp(&a.own_time),
                ProfileSort::CumulativeTime => b.cumulative_time.cmp(&a.cumulative_time),
            };
            by.then_with(|| a.label().cmp(&b.label()))
        });
        rows
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_table(f, ProfileSort::default())
    }
}

/// A script function's row (builtins have none).
fn function_stats(frame: &Frame, t: &Totals, labels: &Labels) -> Option<FunctionStats> {
    let Frame::Script { name, arity } = frame else {
        return None;
    };
    let (file, line) = labels.place(name, *arity).unwrap_or_default();
    Some(FunctionStats {
        function: Labels::function(name),
        file,
        line,
        calls: t.calls,
        primitive_calls: t.primitive,
        own_time: Duration::from_nanos(t.own_ns),
        cumulative_time: Duration::from_nanos(t.cumulative_ns),
        compiled_calls: t.compiled,
    })
}

fn write_function(out: &mut impl fmt::Write, f: &FunctionStats) -> fmt::Result {
    let calls = match f.calls == f.primitive_calls {
        true => f.calls.to_string(),
        false => format!("{}/{}", f.calls, f.primitive_calls),
    };
    let per = |d: Duration, n: u64| d.as_secs_f64() / n.max(1) as f64;
    let fast = match f.compiled_calls {
        0 => String::new(),
        n if n == f.calls => " [fast]".into(),
        n => format!(" [fast: {n} of {}]", f.calls),
    };
    writeln!(
        out,
        "{calls:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {}{fast}",
        f.own_time.as_secs_f64(),
        per(f.own_time, f.calls),
        f.cumulative_time.as_secs_f64(),
        per(f.cumulative_time, f.primitive_calls),
        f.label()
    )
}

fn write_maps(out: &mut impl fmt::Write, maps: &[MapStats]) -> fmt::Result {
    writeln!(
        out,
        "\n   Work sent to workers (busy and moving: summed over workers; item: per call of the function)\n"
    )?;
    writeln!(
        out,
        "    calls    items workers     wall     busy   moving item min   median      max  call"
    )?;
    for m in maps {
        writeln!(
            out,
            "{:>9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}({}) in {}",
            m.calls,
            m.items,
            m.workers,
            short(m.wall),
            short(m.busy),
            short(m.moving),
            short(m.item_min),
            short(m.item_median),
            short(m.item_max),
            m.builtin,
            m.function,
            m.called_from
        )?;
    }
    Ok(())
}

/// A duration in the unit that keeps it short: `850µs`, `12.3ms`, `2.41s`.
fn short(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 1e-3 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

fn map_stats(
    maps: &[MapCall],
    work: &HashMap<Work, Vec<WorkTimes>>,
    labels: &Labels,
) -> Vec<MapStats> {
    let mut rows: Vec<(MapStats, Vec<u64>)> = Vec::new();
    for call in maps {
        let function = labels.row(&call.function);
        let called_from = labels.caller(&call.at);
        let at = rows.iter().position(|(m, _)| {
            m.builtin == call.builtin && m.function == function && m.called_from == called_from
        });
        let (row, samples) = match at {
            Some(at) => &mut rows[at],
            None => {
                let row = MapStats {
                    builtin: call.builtin.into(),
                    function,
                    called_from,
                    calls: 0,
                    items: 0,
                    workers: 0,
                    wall: Duration::ZERO,
                    busy: Duration::ZERO,
                    moving: Duration::ZERO,
                    item_min: Duration::MAX,
                    item_median: Duration::ZERO,
                    item_max: Duration::ZERO,
                };
                rows.push((row, Vec::new()));
                rows.last_mut().expect("just pushed")
            }
        };
        row.calls += 1;
        row.wall += Duration::from_nanos(call.wall_ns);
        row.workers = row.workers.max(call.workers);
        for times in work.get(&call.work).into_iter().flatten() {
            row.items += times.items;
            row.busy += Duration::from_nanos(times.busy_ns);
            row.moving += Duration::from_nanos(times.moving_ns);
            row.item_min = row.item_min.min(Duration::from_nanos(times.min_ns));
            row.item_max = row.item_max.max(Duration::from_nanos(times.max_ns));
            samples.extend(&times.samples);
        }
    }
    rows.into_iter()
        .map(|(mut row, mut samples)| {
            if samples.is_empty() {
                row.item_min = Duration::ZERO;
            } else {
                let middle = samples.len() / 2;
                row.item_median = Duration::from_nanos(*samples.select_nth_unstable(middle).1);
            }
            row
        })
        .collect()
}
