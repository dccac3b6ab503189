//! `Runtime` and its builder: how a host (or the CLI) configures workers and runs scripts.

use crate::locks::lock;
use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use rhai::{Dynamic, EvalAltResult, Scope};

use crate::{
    Cluster, Error, Interrupt,
    builtins::{Backend, Ctx},
    cluster::ClusterTransport,
    engine::{self, HostSetup, StopChecks},
    fast::Accelerated,
    hub::{Hub, HubConfig, ProfileBook},
    logging::{Level, LogFormat, LogRecord, LogSink},
    output::{OutStream, OutputSink, write_line},
    permissions::Permissions,
    profile::{self, Frame, Labels, Profile, Sources},
    settings::{Limits, Settings},
    stop::{Stop, StopCheck, stop_reason},
    transport::local::Launcher,
    value::{FnTable, ProcessHandle},
    wire::{Op, Program, Reply},
};

/// Configures a [`Runtime`].
///
/// ```
/// let runtime = mpscript::Runtime::builder().workers(2).build();
/// assert_eq!(runtime.workers(), 2);
/// ```
#[derive(Clone)]
pub struct RuntimeBuilder {
    workers: Option<usize>,
    worker_exe: Option<PathBuf>,
    settings: Settings,
    host: Option<HostSetup>,
    output: Option<OutputSink>,
    log: Option<LogSink>,
    profile: Option<ProfileSink>,
    cluster: Option<Cluster>,
}

/// Receives the [`Profile`] of each run of a profiling runtime.
pub type ProfileSink = Arc<dyn Fn(&Profile) + Send + Sync>;

impl RuntimeBuilder {
    /// Default number of `pool_map` workers (default: the number of CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// The executable started as a worker (default: this program). It must call
    /// [`run_worker_if_requested`](crate::run_worker_if_requested) first thing in `main`.
    pub fn worker_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_exe = Some(path.into());
        self
    }

    /// Interpreter limits, applied in the main process and every worker.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.settings.limits = limits;
        self
    }

    /// Registers the host's own functions and types: `setup` runs on every engine, in the main
    /// process and in every worker (which is why workers of an embedding app must start through
    /// [`RuntimeBuilder::run_worker_if_requested`]).
    ///
    /// ```
    /// let runtime = mpscript::Runtime::builder()
    ///     .register(|engine| {
    ///         engine.register_fn("triple", |x: i64| x * 3);
    ///     })
    ///     .build();
    /// assert_eq!(runtime.eval::<i64>("triple(14)").unwrap(), 42);
    /// ```
    pub fn register(mut self, setup: impl Fn(&mut rhai::Engine) + Send + Sync + 'static) -> Self {
        let earlier = self.host.take();
        self.host = Some(Arc::new(move |engine: &mut rhai::Engine| {
            if let Some(earlier) = &earlier {
                earlier(engine);
            }
            setup(engine);
        }));
        self
    }

    /// Turns this process into a worker with this builder's registrations if the runtime started
    /// it as one (and never returns then); otherwise returns at once. An embedding app builds its
    /// `RuntimeBuilder` first thing in `main` and calls this before anything with side effects.
    ///
    /// ```no_run
    /// fn host_functions(engine: &mut rhai::Engine) {
    ///     engine.register_fn("weight", |x: i64| x % 7);
    /// }
    ///
    /// let builder = mpscript::Runtime::builder().register(host_functions);
    /// builder.run_worker_if_requested(); // a worker never gets past this line
    /// let runtime = builder.build();
    /// ```
    pub fn run_worker_if_requested(&self) {
        crate::child::serve_if_requested(self.host.clone());
    }

    /// Lets scripts `import` modules from files below `dir`. Without it scripts have no file
    /// access at all.
    pub fn module_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.module_dir = Some(dir.into().display().to_string());
        self
    }

    /// What scripts may read, write, reach and see (nothing by default), in the main process and
    /// in every worker; a host function can check its own accesses against the same grants with
    /// [`Permissions::of`].
    ///
    /// ```
    /// use mpscript::{Access, Permissions};
    /// let dir = std::env::temp_dir().join(format!("mps-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let grants = Permissions::none().allow(Access::Write, &[dir.to_str().unwrap()]).unwrap();
    /// let runtime = mpscript::Runtime::builder().permissions(grants).build();
    /// let file = dir.join("out.txt").display().to_string();
    /// runtime.run("w", &format!("write_file({file:?}, \"hi\")"), &[]).unwrap();
    /// let err = runtime.run("r", &format!("read_file({file:?})"), &[]).unwrap_err();
    /// assert!(err.to_string().contains("run again with --allow-read="), "{err}");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn permissions(mut self, permissions: Permissions) -> Self {
        self.settings.permissions = permissions;
        self
    }

    /// Receives every log record (`log_info(msg)` and its siblings, from any process) instead of
    /// the default, a line of text on the output sink's `Stderr`.
    pub fn on_log(mut self, sink: impl Fn(&LogRecord) + Send + Sync + 'static) -> Self {
        self.log = Some(Arc::new(sink));
        self
    }

    /// Profiles every run (`mpscript run --profile`): each script function's calls and times,
    /// summed over the main process and every worker, and each `pool_map`'s wall, busy and
    /// data-moving time, given to `sink` at the end of the run, failed runs included. Without
    /// it, nothing is recorded and nothing is paid.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// mpscript::run_worker_if_requested(); // this example's workers are its own executable
    /// let rows = Arc::new(Mutex::new(Vec::new()));
    /// let sink = rows.clone();
    /// let runtime = mpscript::Runtime::builder()
    ///     .workers(2)
    ///     .profile(move |p: &mpscript::Profile| *sink.lock().unwrap() = p.functions.clone())
    ///     .build();
    /// runtime.run("sq.rhai", "fn square(x) { x * x }\npool_map(square, 1..=10)", &[]).unwrap();
    /// let rows = rows.lock().unwrap();
    /// let square = rows.iter().find(|f| f.function == "square").unwrap();
    /// assert_eq!((square.calls, square.file.as_str(), square.line), (10, "sq.rhai", 1));
    /// ```
    pub fn profile(mut self, sink: impl Fn(&Profile) + Send + Sync + 'static) -> Self {
        self.settings.profile = true;
        self.profile = Some(Arc::new(sink));
        self
    }

    /// Spreads `pool_map` over the agents of a NATS cluster (`mpscript run --cluster URL`),
    /// besides the local pool unless [`Cluster::only`] says otherwise. The cluster's loopback
    /// rule is checked by [`RuntimeBuilder::build`]'s first run, before anything connects.
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The least level logged (default `Info`): records below it are not even made.
    pub fn log_level(mut self, level: Level) -> Self {
        self.settings.log_level = level;
        self
    }

    /// Receives every `print` and `debug` text, from the script and from workers, instead of
    /// stdout and stderr.
    pub fn on_output(mut self, sink: impl Fn(OutStream, &str) + Send + Sync + 'static) -> Self {
        self.output = Some(Arc::new(sink));
        self
    }

    /// Builds the runtime. No process is started until a script first needs one.
    ///
    /// In a process the runtime started as a worker (the host's `main` did not call
    /// `run_worker_if_requested` first), this tells the parent so, once, and exits.
    pub fn build(self) -> Runtime {
        crate::child::refuse_if_unserved();
        let output = self.output.unwrap_or_else(|| Arc::new(write_line));
        let log = self.log.unwrap_or_else(|| {
            let output = output.clone();
            Arc::new(move |record: &LogRecord| {
                output(OutStream::Stderr, &record.line_in(LogFormat::Text));
            })
        });
        Runtime {
            workers: self.workers.unwrap_or_else(crate::cpu_count),
            worker_exe: self.worker_exe,
            settings: self.settings,
            host: self.host,
            output,
            log,
            interrupt: Interrupt::default(),
            profile: self.profile,
            cluster: self.cluster,
        }
    }
}

/// Runs Rhai scripts whose `spawn`, `pool_map` and `queue` reach worker processes.
///
/// ```
/// let runtime = mpscript::Runtime::builder().build();
/// let value = runtime.run("example", "40 + 2", &[]).unwrap();
/// assert_eq!(value.as_int().unwrap(), 42);
/// ```
pub struct Runtime {
    workers: usize,
    worker_exe: Option<PathBuf>,
    settings: Settings,
    host: Option<HostSetup>,
    output: OutputSink,
    log: LogSink,
    interrupt: Interrupt,
    profile: Option<ProfileSink>,
    cluster: Option<Cluster>,
}

impl Runtime {
    /// Starts configuring a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            workers: None,
            worker_exe: None,
            settings: Settings::default(),
            host: None,
            output: None,
            log: None,
            profile: None,
            cluster: None,
        }
    }

    /// The default number of `pool_map` workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// A handle that stops the current run from another thread or a signal handler.
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// Reads and runs a script file (`-`: standard input, as python, node and deno read it);
    /// `args` reach the script as the array `ARGV`. The file must be UTF-8 (a byte-order mark is
    /// allowed); one that is not is an error naming the offset of its first bad byte.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("latin1-{}.rhai", std::process::id()));
    /// std::fs::write(&path, b"print(\"caf\xe9\");").unwrap();
    /// let runtime = mpscript::Runtime::builder().build();
    /// let err = runtime.run_file(&path, &[]).unwrap_err();
    /// assert!(err.to_string().contains("not UTF-8 text (byte 10 is 0xe9)"), "{err}");
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn run_file(&self, path: &Path, args: &[String]) -> Result<Dynamic, Error> {
        let (name, source) = read_script(path)?;
        self.run(&name, &source, args)
    }

    /// Reads a script file (`-`: standard input) and compiles it without running it, to report
    /// syntax errors.
    pub fn check_file(&self, path: &Path) -> Result<(), Error> {
        let (name, source) = read_script(path)?;
        self.check(&name, &source)
    }

    /// Runs script text and converts its value to `T`.
    ///
    /// ```
    /// let runtime = mpscript::Runtime::builder().workers(2).build();
    /// let total: i64 = runtime.eval("[1, 2, 3].reduce(|a, b| a + b, 0)").unwrap();
    /// assert_eq!(total, 6);
    /// let err = runtime.eval::<i64>("\"not a number\"").unwrap_err();
    /// assert!(err.to_string().contains("expected i64"), "{err}");
    /// ```
    pub fn eval<T: rhai::Variant + Clone>(&self, source: &str) -> Result<T, Error> {
        let value = self.run("<eval>", source, &[])?;
        let found = value.type_name();
        value.try_cast::<T>().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the script returned {found}, expected {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Compiles `source` without running it, to report syntax errors.
    pub fn check(&self, name: &str, source: &str) -> Result<(), Error> {
        engine::fix_hashing_seed()?;
        let session = Session::new(self, name);
        session
            .compile(name, &engine::script_text(source))
            .map(|_| ())
    }

    /// Runs script text. A successful run ends after every spawned process has ended (as Python
    /// waits for its non-daemon processes); a failed run stops them. Either way every worker is shut
    /// down and reaped before this returns.
    pub fn run(&self, name: &str, source: &str, args: &[String]) -> Result<Dynamic, Error> {
        engine::fix_hashing_seed()?;
        self.interrupt.clear();
        let mut session = Session::new(self, name);
        let text: Arc<str> = engine::script_text(source).into();
        let mut ast = session.prelude()?;
        ast += session.compile(name, &text)?;
        let mut scope = Scope::new();
        let argv: rhai::Array = args.iter().map(|a| a.clone().into()).collect();
        scope.push_constant("ARGV", argv);
        let program = session.accelerate(ast);
        let started = Instant::now();
        // A run inside a host function of a profiled run leaves the outer run's record alone.
        let profiled = session.book.is_some() && !profile::is_on();
        if profiled {
            profile::start(&[Frame::Builtin("main".into())]);
        }
        let result = session
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, &program.running);
        let (finished, unobserved) = session.backend.finish(result.is_ok());
        if profiled {
            session.report_profile(started);
        }
        for failure in unobserved {
            session.tell_unobserved(name, &text, failure);
        }
        session
            .outcome(name, &text, result)
            .and_then(|value| finished.map(|()| value))
    }

    /// An interactive session: inputs evaluated one after another with shared variables and
    /// functions, workers kept warm between them. The REPL is built on it.
    ///
    /// ```
    /// let runtime = mpscript::Runtime::builder().build();
    /// let mut session = runtime.interactive().unwrap();
    /// session.eval("fn twice(x) { x * 2 }").unwrap();
    /// session.eval("let base = 20;").unwrap();
    /// assert_eq!(session.eval("twice(base) + 2").unwrap().as_int().unwrap(), 42);
    /// ```
    pub fn interactive(&self) -> Result<Interactive<'_>, Error> {
        engine::fix_hashing_seed()?;
        let session = Session::new(self, "<repl>");
        let prelude = session.prelude()?;
        Ok(Interactive {
            session,
            scope: Scope::new(),
            prelude,
            functions: rhai::AST::empty(),
            inputs: Vec::new(),
            defined_in: HashMap::new(),
        })
    }

    fn hub_config(
        &self,
        program: Program,
        profile: Option<Arc<ProfileBook>>,
    ) -> Result<HubConfig, Error> {
        let exe = match &self.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()
                .map_err(|e| Error::io("finding this executable to start workers", e))?,
        };
        let cluster = match &self.cluster {
            Some(cluster) => Some(Arc::new(ClusterTransport::connect(cluster)?)),
            None => None,
        };
        Ok(HubConfig {
            cluster,
            transport: Arc::new(Launcher::new(exe, self.output.clone())?),
            program,
            workers: self.workers,
            output: self.output.clone(),
            log: self.log.clone(),
            interrupt: self.interrupt.clone(),
            profile,
        })
    }
}

/// An interactive session (see [`Runtime::interactive`]); dropping it shuts its workers down.
pub struct Interactive<'r> {
    session: Session<'r>,
    scope: Scope<'static>,
    /// The standard library's functions.
    prelude: rhai::AST,
    /// The functions of every input so far.
    functions: rhai::AST,
    /// The text of every input so far, so an error can be shown against the input it is in.
    inputs: Vec<Arc<str>>,
    /// Which input (an index into `inputs`) defined each function last.
    defined_in: HashMap<String, usize>,
}

impl Interactive<'_> {
    /// Evaluates one input. Its functions and variables stay for later inputs, and workers get its
    /// text, so functions and closures typed here work with `spawn` and `pool_map`.
    pub fn eval(&mut self, input: &str) -> Result<Dynamic, Error> {
        self.session.runtime.interrupt.clear();
        let this = self.inputs.len();
        self.inputs.push(input.into());
        let name = input_name(this);
        let chunk = self.session.compile(&name, input)?;
        for f in chunk.iter_functions() {
            self.defined_in.insert(f.name.to_string(), this);
        }
        let mut program = self.prelude.clone();
        program += self.functions.clone();
        program += chunk.clone();
        let program = self.session.accelerate(program);
        let result = self
            .session
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &program.running);
        self.functions += chunk.clone_functions_only();
        let outcome = self
            .session
            .outcome(&name, input, result)
            .map_err(|e| self.where_raised(e));
        self.report_unobserved();
        outcome
    }

    /// Spawned processes that failed with nobody joining or monitoring them, reported after the
    /// input during which they failed (a session has no end of run to wait for).
    fn report_unobserved(&self) {
        let failures = match &*self.session.backend.lock() {
            HubState::Running(hub) => hub.unobserved_failures(),
            _ => return,
        };
        for failure in failures {
            let defined = match &failure {
                Error::Remote(remote) => self.defined_in.get(&remote.function).copied(),
                _ => None,
            };
            match defined {
                Some(at) => {
                    self.session
                        .tell_unobserved(&input_name(at), &self.inputs[at], failure)
                }
                None => self.session.tell_unobserved("", "", failure),
            }
        }
    }

    /// An error raised inside a function typed in an earlier input, shown against that input's
    /// text (its positions are there, not in the input that called it); in a worker too.
    fn where_raised(&self, error: Error) -> Error {
        let Error::Script {
            name,
            text,
            error,
            remote,
        } = error
        else {
            return error;
        };
        if let Some(remote) = remote {
            let at = self.defined_in.get(&remote.function).copied();
            return match at.filter(|at| input_name(*at) != name) {
                // The call site is in another text: the report points at where it was raised.
                Some(at) => Error::Script {
                    name: input_name(at),
                    text: self.inputs[at].clone(),
                    error: match *error {
                        EvalAltResult::ErrorRuntime(message, _) => {
                            EvalAltResult::ErrorRuntime(message, rhai::Position::NONE).into()
                        }
                        other => other.into(),
                    },
                    remote: Some(remote),
                },
                None => Error::Script {
                    name,
                    text,
                    error,
                    remote: Some(remote),
                },
            };
        }
        let mut innermost = None;
        let mut inner = &*error;
        while let EvalAltResult::ErrorInFunctionCall(function, _, next, _) = inner {
            innermost = Some(function);
            inner = next;
        }
        let defined = innermost.and_then(|f| self.defined_in.get(f).copied());
        let Some(at) = defined.filter(|at| input_name(*at) != name) else {
            return Error::Script {
                name,
                text,
                error,
                remote: None,
            };
        };
        let mut raised = error;
        while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = *raised {
            raised = next;
        }
        Error::Script {
            name: input_name(at),
            text: self.inputs[at].clone(),
            error: raised,
            remote: None,
        }
    }

    /// Whether `input` is an unfinished statement or block that more lines could complete: a
    /// bracket, block comment or back-tick string still open. Decided with Rhai's own tokenizer,
    /// so quotes and braces inside comments and strings do not count, and an input that cannot
    /// be completed (an unterminated `"` string, a stray `}`) is not incomplete but wrong.
    ///
    /// ```
    /// use mpscript::Interactive;
    /// assert!(Interactive::is_incomplete("fn f(x) {"));
    /// assert!(Interactive::is_incomplete("let s = `two\nlines"));
    /// assert!(!Interactive::is_incomplete("fn f(x) { x }"));
    /// assert!(!Interactive::is_incomplete("let x = 1; // it's {"));
    /// assert!(!Interactive::is_incomplete("let s = \"never closed"));
    /// ```
    pub fn is_incomplete(input: &str) -> bool {
        use rhai::Token;
        let engine = rhai::Engine::new_raw();
        let inputs = [input];
        let (mut tokens, control) = engine.lex(&inputs);
        // The closer each open bracket waits for; `None` for an interpolation's `}`.
        let mut open: Vec<Option<Token>> = Vec::new();
        let mut interpolation_brace = false;
        // Just past an interpolation: the rest of a back-tick string comes next.
        let mut in_back_tick_string = false;
        loop {
            let Some((token, pos)) = tokens.next() else {
                return false;
            };
            let after_interpolation = std::mem::take(&mut in_back_tick_string);
            let closer = match token {
                Token::EOF => return !open.is_empty() || tokens.state.comment_level > 0,
                // A back-tick string (or a `"` string continued with `\`) runs past the end.
                Token::LexError(_) => return after_interpolation || runs_on_at(input, pos),
                Token::InterpolatedString(_) => {
                    interpolation_brace = true;
                    continue;
                }
                Token::LeftBrace if interpolation_brace => {
                    interpolation_brace = false;
                    open.push(None);
                    continue;
                }
                Token::LeftBrace | Token::MapStart => Some(Token::RightBrace),
                Token::LeftParen => Some(Token::RightParen),
                Token::LeftBracket | Token::QuestionBracket => Some(Token::RightBracket),
                Token::RightBrace | Token::RightParen | Token::RightBracket => {
                    match open.pop() {
                        Some(None) if token == Token::RightBrace => {
                            // The parser's job: the string goes on after the interpolation.
                            control.borrow_mut().is_within_text = true;
                            in_back_tick_string = true;
                        }
                        Some(Some(expected)) if expected == token => {}
                        _ => return false,
                    }
                    continue;
                }
                _ => continue,
            };
            open.push(closer);
        }
    }

    /// `value` as the script's `debug` shows it: handles as `Queue(1)` or `Process(pid 4242)`,
    /// strings quoted.
    ///
    /// ```
    /// let runtime = mpscript::Runtime::builder().build();
    /// let mut session = runtime.interactive().unwrap();
    /// let value = session.eval("[lock(), \"a\", 1]").unwrap();
    /// assert_eq!(session.show(&value), r#"[Lock(1), "a", 1]"#);
    /// ```
    pub fn show(&self, value: &Dynamic) -> String {
        let mut scope = Scope::new();
        scope.push("value", value.clone());
        self.session
            .engine
            .eval_with_scope::<String>(&mut scope, "to_debug(value)")
            .unwrap_or_else(|_| format!("{value:?}"))
    }

    /// Every name a completion may offer now: builtins, Rhai's keywords and functions, and the
    /// functions and variables defined so far; sorted, each once.
    ///
    /// ```
    /// let runtime = mpscript::Runtime::builder().build();
    /// let mut session = runtime.interactive().unwrap();
    /// session.eval("fn collatz(n) { n } let cores = 2;").unwrap();
    /// let names = session.completions();
    /// for name in ["pool_map", "spawn", "collatz", "cores", "print", "while"] {
    ///     assert!(names.iter().any(|n| n == name), "{name}");
    /// }
    /// ```
    pub fn completions(&self) -> Vec<String> {
        const KEYWORDS: &[&str] = &[
            "let", "const", "fn", "if", "else", "switch", "while", "loop", "for", "in", "do",
            "until", "break", "continue", "return", "throw", "try", "catch", "import", "export",
            "as", "true", "false", "Fn", "this",
        ];
        let natives = self.session.engine.collect_fn_metadata(
            None,
            |info| Some(info.metadata.name.to_string()),
            true,
        );
        let scripts = self.functions.iter_functions().map(|f| f.name.to_string());
        let variables = self.scope.iter().map(|(name, ..)| name.to_string());
        let mut names: Vec<String> = natives
            .into_iter()
            .chain(scripts)
            .chain(variables)
            .filter(|n| rhai::is_valid_identifier(n))
            .chain(KEYWORDS.iter().map(|k| k.to_string()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Names and arities of the functions defined so far.
    pub fn functions(&self) -> Vec<String> {
        self.functions
            .iter_functions()
            .filter(|f| !f.name.starts_with("anon$"))
            .map(|f| format!("{}({})", f.name, f.params.join(", ")))
            .collect()
    }

    /// Names and types of the variables defined so far.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.scope
            .iter()
            .map(|(name, _, value)| (name.to_string(), value.type_name().to_string()))
            .collect()
    }

    /// The OS pids of the worker processes running now.
    pub fn worker_pids(&self) -> Vec<u32> {
        match &*self.session.backend.lock() {
            HubState::Running(hub) => hub.worker_pids(),
            _ => Vec::new(),
        }
    }

    /// A handle that stops the input being evaluated (Ctrl-C in the REPL).
    pub fn interrupt(&self) -> Interrupt {
        self.session.runtime.interrupt()
    }
}

impl Drop for Interactive<'_> {
    fn drop(&mut self) {
        let _ = self.session.backend.finish(false);
    }
}

/// One run of one script (or one interactive session): its engine, and the hub it starts on
/// first use.
struct Session<'r> {
    runtime: &'r Runtime,
    /// The script's name (`<repl>` for an interactive session).
    name: String,
    engine: rhai::Engine,
    backend: Arc<LazyHub>,
    ctx: Arc<Ctx>,
    fns: FnTable,
    /// In a profiled run: what the hub collects, and where each function is written.
    book: Option<Arc<ProfileBook>>,
    sources: Mutex<Sources>,
}

impl<'r> Session<'r> {
    fn new(runtime: &'r Runtime, name: &str) -> Self {
        let backend = Arc::new(LazyHub::new(runtime.log.clone()));
        let fns = FnTable::default();
        let interrupt = runtime.interrupt.clone();
        let stop: StopCheck = Arc::new(move || interrupt.stop());
        let main = ProcessHandle::new(0, std::process::id());
        let ctx = Ctx::new(
            backend.clone(),
            fns.clone(),
            stop,
            Some(main),
            &runtime.settings,
            name,
        );
        let engine = engine::new_engine(
            &ctx,
            &runtime.settings,
            runtime.host.as_ref(),
            runtime.output.clone(),
            StopChecks::EveryOperation,
        );
        Session {
            runtime,
            name: name.to_string(),
            engine,
            backend,
            ctx,
            fns,
            book: runtime.profile.as_ref().map(|_| Arc::default()),
            sources: Mutex::default(),
        }
    }

    /// Merges what this thread and the workers recorded and hands it to the host's sink.
    fn report_profile(&self, started: Instant) {
        let (Some(sink), Some(book)) = (&self.runtime.profile, &self.book) else {
            return;
        };
        let Some(mut main) = profile::take() else {
            return;
        };
        let total = started.elapsed();
        main.charge_base((total.as_nanos() as u64).saturating_sub(main.top_level_ns()));
        let collected = book.take();
        let mut records = vec![main.finish()];
        records.extend(collected.records);
        let sources = lock(&self.sources);
        let labels = Labels {
            sources: &sources,
            script: &self.name,
        };
        let profile = Profile::assemble(
            total,
            records,
            collected.unreported,
            &collected.maps,
            &labels,
        );
        sink(&profile);
    }

    /// Reports on the output's stderr a process that failed with nobody learning of it, against
    /// `text` (the source its function is in; empty when unknown).
    fn tell_unobserved(&self, name: &str, text: &str, failure: Error) {
        let report = crate::diagnostics::unobserved(name, text, failure);
        (self.runtime.output)(OutStream::Stderr, &format!("{report:?}"));
    }

    /// The program as it runs: numeric functions routed through the fast tier.
    fn accelerate(&mut self, ast: rhai::AST) -> Accelerated {
        let output = self.runtime.output.clone();
        let notices = Arc::new(move |text: &str| output(OutStream::Notice, text));
        let stop = self.ctx.stop_check().clone();
        let profiled = self.runtime.profile.is_some();
        let program = Accelerated::new(ast, &self.engine, stop, notices, profiled);
        program.install(&mut self.engine);
        program
    }

    /// Compiles the standard library, the first chunks of every program.
    fn prelude(&self) -> Result<rhai::AST, Error> {
        let mut prelude = rhai::AST::empty();
        for (module, source) in crate::stdlib::MODULES {
            prelude += self.compile(&crate::stdlib::chunk_name(module), source)?;
        }
        Ok(prelude)
    }

    /// Compiles one chunk of the program and hands its text on for the workers.
    fn compile(&self, name: &str, text: &str) -> Result<rhai::AST, Error> {
        let ast = self
            .engine
            .compile(text)
            .map_err(|e| self.script_error(name, text, e.into()))?;
        if let Some(error) = assignment_into_constant(&ast, text) {
            return Err(self.script_error(name, text, error));
        }
        self.fns.add(&ast);
        if self.book.is_some() {
            let mut sources = lock(&self.sources);
            for def in ast.iter_fn_def() {
                let line = def.body.start_position().line().unwrap_or(0);
                let key = (def.name.to_string(), def.params.len() as u32);
                sources.insert(key, (name.to_string(), line));
            }
        }
        self.backend.add_chunk(text, || {
            let program = Program {
                name: self.name.clone(),
                chunks: Vec::new(),
                settings: self.runtime.settings.clone(),
                host_functions: self.runtime.host.is_some(),
            };
            self.runtime.hub_config(program, self.book.clone())
        })?;
        Ok(ast)
    }

    fn outcome(
        &self,
        name: &str,
        text: &str,
        result: Result<Dynamic, Box<EvalAltResult>>,
    ) -> Result<Dynamic, Error> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => match stop_reason(&e) {
                Some(Stop::Exit(0)) => Ok(Dynamic::UNIT),
                Some(Stop::Exit(code)) => Err(Error::Exit(code as i32)),
                Some(Stop::Interrupted(signal)) => Err(Error::Interrupted { signal }),
                Some(Stop::Linked) => Err(Error::Linked(
                    self.runtime.interrupt.linked().unwrap_or_default(),
                )),
                Some(Stop::TimedOut(_)) | None => Err(self.script_error(name, text, e)),
            },
        }
    }

    fn script_error(&self, name: &str, text: &str, error: Box<EvalAltResult>) -> Error {
        let remote = match error.unwrap_inner() {
            EvalAltResult::ErrorRuntime(message, _) => message
                .read_lock::<rhai::ImmutableString>()
                .and_then(|m| self.ctx.remote_error_for(&m))
                .map(Box::new),
            _ => None,
        };
        Error::Script {
            name: name.to_string(),
            text: text.into(),
            error,
            remote,
        }
    }
}

/// The hub, started the first time a builtin needs it, so a script that never uses workers never
/// opens a socket.
struct LazyHub {
    state: Mutex<HubState>,
    /// Where the main script's own log records go (workers' go through the hub).
    log: LogSink,
}

#[derive(Default)]
enum HubState {
    /// Not compiled yet.
    #[default]
    Unconfigured,
    Ready(Box<HubConfig>),
    Running(Arc<Hub>),
    /// Starting failed; every later call reports why.
    Failed(String),
    Finished,
}

impl LazyHub {
    fn new(log: LogSink) -> LazyHub {
        LazyHub {
            state: Mutex::default(),
            log,
        }
    }

    /// Adds a chunk of program text: the first one configures the hub (made by `config`), later
    /// ones reach workers already running.
    fn add_chunk(
        &self,
        text: &str,
        config: impl FnOnce() -> Result<HubConfig, Error>,
    ) -> Result<(), Error> {
        let mut state = self.lock();
        match &mut *state {
            HubState::Unconfigured => {
                let mut config = config()?;
                config.program.chunks.push(text.to_string());
                *state = HubState::Ready(Box::new(config));
            }
            HubState::Ready(config) => config.program.chunks.push(text.to_string()),
            HubState::Running(hub) => hub.add_chunk(text.to_string()),
            HubState::Failed(_) | HubState::Finished => {}
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        lock(&self.state)
    }

    fn get(&self) -> Result<Arc<Hub>, Error> {
        let mut state = self.lock();
        match std::mem::take(&mut *state) {
            HubState::Running(hub) => {
                *state = HubState::Running(hub.clone());
                Ok(hub)
            }
            HubState::Ready(config) => match Hub::new(*config) {
                Ok(hub) => {
                    let hub = Arc::new(hub);
                    *state = HubState::Running(hub.clone());
                    Ok(hub)
                }
                Err(e) => {
                    *state = HubState::Failed(e.to_string());
                    Err(e)
                }
            },
            HubState::Failed(why) => {
                *state = HubState::Failed(why.clone());
                Err(Error::WorkerStart(why))
            }
            HubState::Unconfigured | HubState::Finished => {
                Err(Error::WorkerStart("no script is running".into()))
            }
        }
    }

    /// Shuts every worker down: after a successful run once spawned processes have ended, after a
    /// failed one at once (their results can no longer be used). Also gives the errors of the
    /// processes that failed without anyone learning of it.
    fn finish(&self, wait_for_processes: bool) -> (Result<(), Error>, Vec<Error>) {
        let state = std::mem::replace(&mut *self.lock(), HubState::Finished);
        let HubState::Running(hub) = state else {
            return (Ok(()), Vec::new());
        };
        let waited = match wait_for_processes {
            true => hub.wait_for_processes(),
            false => Ok(()),
        };
        (waited, hub.unobserved_failures())
    }
}

impl Backend for LazyHub {
    fn call(&self, op: Op) -> Result<Reply, Error> {
        self.get()?.call(op)
    }

    fn log(&self, record: LogRecord) -> Result<(), Error> {
        (self.log)(&record);
        Ok(())
    }
}

/// How the REPL names its inputs in reports: `<input 1>`, `<input 2>`, ...
fn input_name(index: usize) -> String {
    format!("<input {}>", index + 1)
}

/// The name and text of a script file, or of standard input for `-`; a file that is not UTF-8
/// says where its first bad byte is.
fn read_script(path: &Path) -> Result<(String, String), Error> {
    let name = if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let what = || format!("reading {name}");
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    }
    .map_err(|e| Error::io(what(), e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        Error::InvalidArgument(format!(
            "{}: the script is not UTF-8 text (byte {at} is 0x{:02x}); save it as UTF-8",
            what(),
            e.as_bytes()[at]
        ))
    })?;
    Ok((name, text))
}

/// Whether the string that starts at `pos` may go on past the end of `input`: a back-tick
/// string, or a `"` string whose last line ends with a `\` continuation.
fn runs_on_at(input: &str, pos: rhai::Position) -> bool {
    let (Some(line), Some(column)) = (pos.line(), pos.position()) else {
        return false;
    };
    let opening = input
        .lines()
        .nth(line - 1)
        .and_then(|l| l.chars().nth(column - 1));
    match opening {
        Some('`') => true,
        Some('"') => input.trim_end_matches(['\n', '\r']).ends_with('\\'),
        _ => false,
    }
}

/// Rhai 1.27's optimizer puts a constant's value in place of its name, so an element assignment
/// like `const m = #{}; m["x"] = 1` reaches the interpreter as an assignment into a literal, where
/// it panics. Such an assignment is Rhai's "Cannot modify constant" error instead, found here.
fn assignment_into_constant(ast: &rhai::AST, text: &str) -> Option<Box<EvalAltResult>> {
    use rhai::{ASTNode, Expr, Stmt};
    let mut found = None;
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Assignment(x))) = path.last() {
            let mut target = &x.1.lhs;
            while let Expr::Index(inner, ..) | Expr::Dot(inner, ..) = target {
                target = &inner.lhs;
            }
            if !matches!(target, Expr::Variable(..) | Expr::ThisPtr(..)) {
                found = Some(target.position());
            }
        }
        found.is_none()
    });
    let at = found?;
    // The constant's name is gone from the tree; the text at its place still has it.
    let line = text
        .lines()
        .nth(at.line()?.checked_sub(1)?)
        .unwrap_or_default();
    let rest = line
        .get(at.position().unwrap_or(1).saturating_sub(1)..)
        .unwrap_or_default();
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    Some(EvalAltResult::ErrorAssignmentToConstant(name, at).into())
}

#[cfg(test)]
mod tests {
    use super::Interactive;

    #[test]
    fn incomplete_inputs_are_told_by_rhai_s_tokenizer() {
        let incomplete = [
            "fn f(x) {",
            "let m = #{ a: 1,",
            "foo(1,\n",
            "let s = `two\nlines",
            "let s = `a ${x} b",
            "let s = `a ${ if x { 1",
            "/* a comment that goes on",
            "let s = \"continued \\\n",
            "let a = [1, 2,",
        ];
        for input in incomplete {
            assert!(Interactive::is_incomplete(input), "{input:?} is incomplete");
        }
        let finished = [
            "fn f(x) { x }",
            "let x = 1; // it's { not open",
            "let s = \"never closed",
            "let s = \"a { b\";",
            "let s = `a ${x} b`;",
            "let s = `a ${ #{k: 1}.k } b`;",
            "}",
            "let x = (1 + 2];",
            "print('{')",
            "/* closed { */ 1",
        ];
        for input in finished {
            assert!(
                !Interactive::is_incomplete(input),
                "{input:?} is not incomplete"
            );
        }
    }
}
