//! The interactive front end of the CLI: line editing and history (rustyline) on a terminal, plain
//! lines from a pipe, over an [`mpscript::Interactive`] session whose workers stay warm.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use mpscript::{Error, Interactive, Runtime};
use rustyline::{
    Context, Editor, Helper, completion::Completer, error::ReadlineError, highlight::Highlighter,
    hint::Hinter, history::DefaultHistory, validate::Validator,
};

const HELP: &str = "\
Type Rhai statements; functions and closures you define work with spawn and pool_map.
A statement or block left open continues on the next line.
  :fns      functions defined so far
  :vars     variables and their types
  :workers  worker processes running now
  :help     this text
  :quit     leave (or Ctrl-D); Ctrl-C cancels the input or stops a running evaluation";

/// Tab completion from the names the session knows (builtins, keywords, what was defined),
/// refreshed after every input.
#[derive(Default, Clone)]
struct Names(Arc<Mutex<Vec<String>>>);

impl Completer for Names {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let found = names
            .iter()
            .filter(|n| !word.is_empty() && n.starts_with(word))
            .cloned()
            .collect();
        Ok((start, found))
    }
}

impl Hinter for Names {
    type Hint = String;
}
impl Highlighter for Names {}
impl Validator for Names {}
impl Helper for Names {}

/// Where input lines come from.
enum Input {
    Terminal {
        editor: Box<Editor<Names, DefaultHistory>>,
        history: Option<PathBuf>,
        names: Names,
    },
    Pipe(std::io::StdinLock<'static>),
}

/// What reading one line gave.
enum Line {
    Text(String),
    /// Ctrl-C at the prompt: drop what was typed.
    Cancelled,
    End,
}

impl Input {
    fn open() -> Input {
        if std::io::stdin().is_terminal()
            && let Ok(mut editor) = Editor::new()
        {
            let names = Names::default();
            editor.set_helper(Some(names.clone()));
            let history =
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".mpscript_history"));
            if let Some(path) = &history {
                let _ = editor.load_history(path);
            }
            return Input::Terminal {
                editor: Box::new(editor),
                history,
                names,
            };
        }
        Input::Pipe(std::io::stdin().lock())
    }

    /// After an input was evaluated: it goes into the history whole (a multi-line function is
    /// recalled as one entry), and completion learns what it defined.
    fn remember(&mut self, text: &str, session: &Interactive<'_>) {
        if let Input::Terminal { editor, names, .. } = self {
            if !text.trim().is_empty() {
                let _ = editor.add_history_entry(text.trim_end());
            }
            *names.0.lock().unwrap_or_else(|e| e.into_inner()) = session.completions();
        }
    }

    fn read(&mut self, prompt: &str) -> Line {
        match self {
            Input::Terminal { editor, .. } => match editor.readline(prompt) {
                Ok(line) => Line::Text(line),
                Err(ReadlineError::Interrupted) => Line::Cancelled,
                Err(_) => Line::End,
            },
            Input::Pipe(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => Line::End,
                    Ok(_) => Line::Text(line.trim_end_matches(['\n', '\r']).to_string()),
                }
            }
        }
    }

    fn save_history(&mut self) {
        if let Input::Terminal {
            editor,
            history: Some(path),
            ..
        } = self
        {
            let _ = editor.save_history(path);
        }
    }
}

/// Runs the REPL until `:quit`, Ctrl-D or end of input; `exit(n)` leaves with `n`.
pub(crate) fn run(runtime: &Runtime) -> ExitCode {
    let mut session = match runtime.interactive() {
        Ok(session) => session,
        Err(e) => {
            eprintln!("{:?}", mpscript::report(&e));
            return ExitCode::from((e.exit_code() & 0xff) as u8);
        }
    };
    let mut input = Input::open();
    input.remember("", &session);
    let terminal = matches!(input, Input::Terminal { .. });
    if terminal {
        println!(
            "mpscript {} REPL; :help for help",
            env!("CARGO_PKG_VERSION")
        );
    }
    let mut buffer = String::new();
    let code = loop {
        let prompt = if buffer.is_empty() { "mps> " } else { "...> " };
        let line = match input.read(prompt) {
            Line::Text(line) => line,
            Line::Cancelled => {
                buffer.clear();
                continue;
            }
            Line::End if buffer.trim().is_empty() => break ExitCode::SUCCESS,
            Line::End => {
                let rest = std::mem::take(&mut buffer);
                break evaluate(&mut session, &rest).unwrap_or(ExitCode::SUCCESS);
            }
        };
        if buffer.is_empty() && line.trim_start().starts_with(':') {
            input.remember(&line, &session);
            match command(&session, line.trim()) {
                Some(code) => break code,
                None => continue,
            }
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if buffer.trim().is_empty() || Interactive::is_incomplete(&buffer) {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        let ended = evaluate(&mut session, &text);
        input.remember(&text, &session);
        if let Some(code) = ended {
            break code;
        }
    };
    input.save_history();
    code
}

/// Evaluates one input and shows its value or error; `Some` when the REPL should end.
fn evaluate(session: &mut Interactive<'_>, text: &str) -> Option<ExitCode> {
    match session.eval(text) {
        Ok(value) if value.is_unit() => {}
        Ok(value) => println!("=> {}", session.show(&value)),
        Err(Error::Exit(code)) => return Some(ExitCode::from((code & 0xff) as u8)),
        Err(Error::Interrupted { .. }) => eprintln!("interrupted"),
        Err(e) => eprintln!("{:?}", mpscript::report(&e)),
    }
    let _ = std::io::stdout().flush();
    None
}

/// Runs a `:command`; `Some` when the REPL should end.
fn command(session: &Interactive<'_>, line: &str) -> Option<ExitCode> {
    match line {
        ":quit" | ":q" | ":exit" => return Some(ExitCode::SUCCESS),
        ":help" | ":h" => println!("{HELP}"),
        ":fns" => session.functions().iter().for_each(|f| println!("{f}")),
        ":vars" => {
            for (name, type_name) in session.variables() {
                println!("{name}: {type_name}");
            }
        }
        ":workers" => {
            let pids = session.worker_pids();
            println!("{} worker processes {pids:?}", pids.len());
        }
        other => eprintln!("unknown command {other}; :help lists them"),
    }
    None
}
