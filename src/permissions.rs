//! What a script may touch outside itself (files to read or write, hosts to reach, environment
//! variables): denied unless granted, decided once in the main process, carried unchanged to every
//! worker inside the program, and checked inside the builtins of every process.

use std::{
    fs::File,
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The kinds of access a script can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Access {
    /// Reading files, listing directories, asking whether a path exists.
    Read,
    /// Creating, writing and removing files and directories.
    Write,
    /// Connecting to hosts (HTTP).
    Net,
    /// Reading environment variables.
    Env,
}

impl Access {
    fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Net => "net",
            Access::Env => "env",
        }
    }
}

/// What scripts may touch, like Deno's permissions: nothing unless granted; a grant without a list
/// covers the whole kind, a directory covers what is below it, and a denial beats any grant.
///
/// ```
/// use mpscript::{Access, Permissions};
/// let dir = std::env::temp_dir();
/// let permissions = Permissions::none()
///     .allow(Access::Read, &[dir.to_str().unwrap()])
///     .unwrap()
///     .allow(Access::Env, &["HOME"])
///     .unwrap();
/// assert!(permissions.check_read(&dir.join("data.csv")).is_ok());
/// let err = permissions.check_read(std::path::Path::new("/etc/passwd")).unwrap_err();
/// assert!(err.to_string().contains("run again with --allow-read=/etc/passwd"), "{err}");
/// assert!(permissions.check_env("PATH").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Permissions {
    read: Rule<PathBuf>,
    write: Rule<PathBuf>,
    net: Rule<Host>,
    env: Rule<String>,
    /// On a cluster agent, what the agent's operator granted: an access needs both grants.
    ceiling: Option<Box<Permissions>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rule<T> {
    allow: Scope<T>,
    deny: Scope<T>,
}

impl<T> Default for Rule<T> {
    fn default() -> Self {
        Rule {
            allow: Scope::Nothing,
            deny: Scope::Nothing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Scope<T> {
    Nothing,
    Everything,
    Only(Vec<T>),
}

impl<T> Scope<T> {
    /// Adds `items` (none: the whole kind).
    fn widen(&mut self, items: Vec<T>) {
        match (&mut *self, items.is_empty()) {
            (Scope::Everything, _) => {}
            (_, true) => *self = Scope::Everything,
            (Scope::Only(list), false) => list.extend(items),
            (Scope::Nothing, false) => *self = Scope::Only(items),
        }
    }

    /// The first entry that covers the target, `Some(None)` if the whole kind does.
    fn covering(&self, covers: impl Fn(&T) -> bool) -> Option<Option<&T>> {
        match self {
            Scope::Nothing => None,
            Scope::Everything => Some(None),
            Scope::Only(list) => list.iter().find(|t| covers(t)).map(Some),
        }
    }
}

/// A host, lower-cased, with a port if the grant names one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Host {
    name: String,
    port: Option<u16>,
}

impl Host {
    fn parse(text: &str) -> Result<Host, Error> {
        let text = text.trim().to_ascii_lowercase();
        let bad = || Error::InvalidArgument(format!("{text:?} is not a HOST or HOST:PORT"));
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') || name.ends_with(']') => {
                (name.to_string(), Some(port.parse().map_err(|_| bad())?))
            }
            _ => (text.clone(), None),
        };
        let name = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if name.is_empty() {
            return Err(bad());
        }
        Ok(Host { name, port })
    }

    fn covers(&self, name: &str, port: u16) -> bool {
        self.name == name && self.port.is_none_or(|p| p == port)
    }
}

impl Permissions {
    /// Nothing granted (the default).
    pub fn none() -> Permissions {
        Permissions::default()
    }

    /// Everything granted (`-A`).
    pub fn all() -> Permissions {
        let mut all = Permissions::none();
        for access in [Access::Read, Access::Write, Access::Net, Access::Env] {
            all = all
                .allow(access, &[])
                .expect("an empty list is always valid");
        }
        all
    }

    /// Grants `access` to `list` (paths, `HOST[:PORT]`s or variable names), or to everything of
    /// that kind when `list` is empty. Relative paths are taken from the working directory now.
    pub fn allow(mut self, access: Access, list: &[&str]) -> Result<Permissions, Error> {
        self.widen(access, list, false)?;
        Ok(self)
    }

    /// Denies `access` to `list`, or to everything of that kind when `list` is empty; a denial
    /// beats any grant.
    pub fn deny(mut self, access: Access, list: &[&str]) -> Result<Permissions, Error> {
        self.widen(access, list, true)?;
        Ok(self)
    }

    fn widen(&mut self, access: Access, list: &[&str], deny: bool) -> Result<(), Error> {
        fn pick<T>(rule: &mut Rule<T>, deny: bool) -> &mut Scope<T> {
            if deny {
                &mut rule.deny
            } else {
                &mut rule.allow
            }
        }
        match access {
            Access::Read | Access::Write => {
                let paths = list
                    .iter()
                    .map(|p| resolve(Path::new(p)))
                    .collect::<Result<_, _>>()?;
                let rule = if access == Access::Read {
                    &mut self.read
                } else {
                    &mut self.write
                };
                pick(rule, deny).widen(paths);
            }
            Access::Net => {
                let hosts = list
                    .iter()
                    .map(|h| Host::parse(h))
                    .collect::<Result<_, _>>()?;
                pick(&mut self.net, deny).widen(hosts);
            }
            Access::Env => {
                let names = list.iter().map(|n| n.to_string()).collect();
                pick(&mut self.env, deny).widen(names);
            }
        }
        Ok(())
    }

    /// The grants of the run a host function is called from, so its own I/O obeys them too.
    ///
    /// ```
    /// use mpscript::{Permissions, rhai::NativeCallContext};
    /// let runtime = mpscript::Runtime::builder()
    ///     .register(|engine| {
    ///         engine.register_fn("host_size", |context: NativeCallContext, path: &str| {
    ///             let path = Permissions::of(&context)
    ///                 .check_read(std::path::Path::new(path))
    ///                 .map_err(|e| e.to_string())?;
    ///             Ok::<_, Box<mpscript::rhai::EvalAltResult>>(
    ///                 std::fs::metadata(path).map_or(-1, |m| m.len() as i64),
    ///             )
    ///         });
    ///     })
    ///     .build();
    /// let err = runtime.run("h", r#"host_size("/etc/hostname")"#, &[]).unwrap_err();
    /// assert!(err.to_string().contains("--allow-read"), "{err}");
    /// ```
    pub fn of(context: &rhai::NativeCallContext) -> std::sync::Arc<Permissions> {
        context
            .tag()
            .and_then(|tag| tag.clone().try_cast::<std::sync::Arc<Permissions>>())
            .unwrap_or_default()
    }

    /// Whether `path` may be read; the absolute path to use if so. Symbolic links are followed
    /// and their target checked; a path that leaves a grant with `..` and comes back is allowed.
    pub fn check_read(&self, path: &Path) -> Result<PathBuf, Error> {
        let absolute = check_path(&self.read, Access::Read, path)?;
        self.under_ceiling(|c| c.check_read(path).map(drop))?;
        Ok(absolute)
    }

    /// Whether `path` may be written (created, removed); the absolute path to use if so.
    pub fn check_write(&self, path: &Path) -> Result<PathBuf, Error> {
        let absolute = check_path(&self.write, Access::Write, path)?;
        self.under_ceiling(|c| c.check_write(path).map(drop))?;
        Ok(absolute)
    }

    /// These grants, on a cluster agent whose operator granted `agent`: an access needs both, so
    /// a run never gets more on an agent than the agent gives, nor more than it asked for.
    pub(crate) fn within(mut self, agent: Permissions) -> Permissions {
        self.ceiling = Some(Box::new(agent));
        self
    }

    /// `check` on the agent's grants, if there are any; its refusal says whose it is.
    fn under_ceiling(
        &self,
        check: impl Fn(&Permissions) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let Some(ceiling) = &self.ceiling else {
            return Ok(());
        };
        check(ceiling).map_err(|e| match e {
            Error::Denied {
                access,
                target,
                message,
            } => Error::Denied {
                message: format!(
                    "{} (on the cluster agent that runs this function: its operator grants it)",
                    message.replace("run again with", "the agent needs")
                ),
                access,
                target,
            },
            other => other,
        })
    }

    /// Whether the real path `real` is inside `rule`'s grants here and on the agent.
    fn covers_real(&self, rule: fn(&Permissions) -> &Rule<PathBuf>, real: &Path) -> bool {
        covered(rule(self), real)
            && self
                .ceiling
                .as_ref()
                .is_none_or(|c| c.covers_real(rule, real))
    }

    /// Whether `host` may be reached on `port`.
    pub fn check_net(&self, host: &str, port: u16) -> Result<(), Error> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let target = format!("{host}:{port}");
        check(&self.net, Access::Net, &target, &host, |h| {
            h.covers(&host, port)
        })?;
        self.under_ceiling(|c| c.check_net(&host, port))
    }

    /// Whether environment variable `name` may be read.
    pub fn check_env(&self, name: &str) -> Result<(), Error> {
        check(&self.env, Access::Env, name, name, |n| n == name)?;
        self.under_ceiling(|c| c.check_env(name))
    }

    /// Opens `path` for reading, checked; on Linux the file actually opened is checked again, so a
    /// path swapped for a link between the check and the open cannot lead out of a grant.
    pub(crate) fn open_read(&self, path: &Path) -> Result<(PathBuf, File), Error> {
        let absolute = self.check_read(path)?;
        let file = File::open(&absolute).map_err(|e| io_error("reading", &absolute, e))?;
        if opened(&file).is_some_and(|real| !self.covers_real(|p| &p.read, &real)) {
            return Err(denied(Access::Read, &absolute, DeniedBy::NoGrant));
        }
        Ok((absolute, file))
    }

    /// Opens `path` for writing (`append`ing, or truncating), creating it, checked. The directory
    /// is opened and checked first, and the file opened through it without following a link at
    /// its last step, so nothing outside a grant is created or truncated whatever changes between
    /// the check and the open.
    pub(crate) fn open_write(&self, path: &Path, append: bool) -> Result<(PathBuf, File), Error> {
        let absolute = self.check_write(path)?;
        let file = open_beneath(&absolute, append, |dir, name| match opened(dir) {
            Some(real) if !self.covers_real(|p| &p.write, &real.join(name)) => {
                Err(denied(Access::Write, &absolute, DeniedBy::NoGrant))
            }
            _ => Ok(()),
        })
        .map_err(|e| match e {
            Opened::Denied(e) => e,
            Opened::Io(e) => io_error("writing", &absolute, e),
        })?;
        Ok((absolute, file))
    }
}

enum Opened {
    Denied(Error),
    Io(std::io::Error),
}

/// Opens `path` for writing through a handle of its directory, which `check` approves first.
#[cfg(target_os = "linux")]
fn open_beneath(
    path: &Path,
    append: bool,
    check: impl FnOnce(&File, &std::ffi::OsStr) -> Result<(), Error>,
) -> Result<File, Opened> {
    use std::{
        ffi::CString,
        os::{
            fd::{AsRawFd, FromRawFd},
            unix::{ffi::OsStrExt, fs::OpenOptionsExt},
        },
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Opened::Io(std::io::Error::from(
            std::io::ErrorKind::InvalidInput,
        )));
    };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
        .open(dir)
        .map_err(Opened::Io)?;
    check(&dir, name).map_err(Opened::Denied)?;
    let name = CString::new(name.as_bytes())
        .map_err(|_| Opened::Io(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    let mode = if append {
        libc::O_APPEND
    } else {
        libc::O_TRUNC
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC | mode;
    // SAFETY: openat with a directory descriptor we own and a NUL-terminated name; the returned
    // descriptor is owned by the File from here on.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o666) };
    if fd < 0 {
        return Err(Opened::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn open_beneath(
    path: &Path,
    append: bool,
    _check: impl FnOnce(&File, &std::ffi::OsStr) -> Result<(), Error>,
) -> Result<File, Opened> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(Opened::Io)
}

/// What a file really opened is, where the system says (Linux: `/proc/self/fd`).
fn opened(file: &File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// Whether `rule` lets a resolved path through.
fn covered(rule: &Rule<PathBuf>, real: &Path) -> bool {
    rule.allow.covering(|root| real.starts_with(root)).is_some()
        && rule.deny.covering(|root| real.starts_with(root)).is_none()
}

/// Why an access was refused.
enum DeniedBy {
    NoGrant,
    /// The `--deny-*` entry that matched (`None`: the whole kind).
    Denial(Option<String>),
}

fn check<T>(
    rule: &Rule<T>,
    access: Access,
    target: &str,
    flag_value: &str,
    covers: impl Fn(&T) -> bool,
) -> Result<(), Error> {
    if rule.deny.covering(&covers).is_some() {
        return Err(denied_text(
            access,
            target,
            flag_value,
            DeniedBy::Denial(None),
        ));
    }
    match rule.allow.covering(&covers) {
        Some(_) => Ok(()),
        None => Err(denied_text(access, target, flag_value, DeniedBy::NoGrant)),
    }
}

fn check_path(rule: &Rule<PathBuf>, access: Access, path: &Path) -> Result<PathBuf, Error> {
    let absolute = absolute(path)?;
    let real = real_path(&absolute);
    for seen in [&absolute, &real] {
        if let Some(entry) = rule.deny.covering(|root| seen.starts_with(root)) {
            let by = DeniedBy::Denial(entry.map(|p| p.display().to_string()));
            return Err(denied_leading(access, &absolute, &real, by));
        }
    }
    match rule.allow.covering(|root| real.starts_with(root)) {
        Some(_) => Ok(absolute),
        None => Err(denied_leading(access, &absolute, &real, DeniedBy::NoGrant)),
    }
}

fn denied(access: Access, path: &Path, by: DeniedBy) -> Error {
    denied_leading(access, path, path, by)
}

/// A refusal of `path`, which leads (through links) to `real`: the grant to ask for is `real`'s.
fn denied_leading(access: Access, path: &Path, real: &Path, by: DeniedBy) -> Error {
    let (shown, target) = (path.display().to_string(), real.display().to_string());
    let named = if real == path {
        format!("{shown:?}")
    } else {
        format!("{shown:?} (a link to {target:?})")
    };
    let mut error = denied_text(access, &named, &target, by);
    if let Error::Denied { target, .. } = &mut error {
        *target = shown;
    }
    error
}

fn denied_text(access: Access, target: &str, flag_value: &str, by: DeniedBy) -> Error {
    let name = access.name();
    let why = match by {
        DeniedBy::NoGrant => format!("run again with --allow-{name}={flag_value}"),
        DeniedBy::Denial(Some(entry)) => format!("--deny-{name}={entry} forbids it"),
        DeniedBy::Denial(None) => format!("--deny-{name} forbids it"),
    };
    Error::Denied {
        access: name,
        target: flag_value.to_string(),
        message: format!("{name} access to {target} denied: {why}"),
    }
}

/// `path` made absolute against the working directory, with `.` and `..` resolved by name.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, Error> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("finding the working directory", e))?
            .join(path)
    };
    let mut clean = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    Ok(clean)
}

/// Where `path` really leads: its longest existing ancestor with every link followed, then the
/// rest of its components.
fn real_path(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// A grant's path, as it is checked: absolute and with links followed.
fn resolve(path: &Path) -> Result<PathBuf, Error> {
    Ok(real_path(&absolute(path)?))
}

/// An I/O error naming the path and the OS's reason.
pub(crate) fn io_error(doing: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{doing} {:?}", path.display().to_string()), e)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The race a path check alone leaves open: the name is swapped for a link to a file outside
    /// the grant after the check. The open through the checked directory refuses the link, and
    /// the file outside is neither created nor truncated.
    #[test]
    fn a_link_swapped_in_after_the_check_is_not_followed_by_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep me").unwrap();
        std::fs::create_dir(dir.path().join("granted")).unwrap();
        let target = dir.path().join("granted/out.txt");
        let grants = Permissions::none()
            .allow(
                Access::Write,
                &[dir.path().join("granted").to_str().unwrap()],
            )
            .unwrap();
        let checked = grants.check_write(&target).unwrap();
        std::os::unix::fs::symlink(&outside, &checked).unwrap(); // the swap
        let opened = open_beneath(&checked, false, |_, _| Ok(()));
        assert!(matches!(opened, Err(Opened::Io(_))), "followed the link");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        // Through the public path the link is refused by the check itself.
        let err = grants.open_write(&target, false).unwrap_err();
        assert!(err.is_denied(), "{err}");
    }

    #[test]
    fn a_file_read_is_checked_where_it_really_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        std::fs::write(dir.path().join("in/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        let grants = Permissions::none()
            .allow(Access::Read, &[dir.path().join("in").to_str().unwrap()])
            .unwrap();
        assert!(grants.open_read(&dir.path().join("in/a.txt")).is_ok());
        let opened = File::open(dir.path().join("secret.txt")).unwrap();
        let real = opened_path(&opened);
        assert!(!covered(&grants.read, &real), "{real:?}");
    }

    fn opened_path(file: &File) -> PathBuf {
        opened(file).expect("/proc/self/fd names an open file")
    }
}
