//! The data builtins compiled code calls directly (`fast`), kept in a module of their own so that
//! a host's function of the same name and arity shows as a second registration, and the tier
//! leaves that call to Rhai, which finds the host's first.

use rhai::{Dynamic, FuncRegistration, ImmutableString, Map, Module};

use super::{
    files::{self, Range},
    text,
};
use crate::permissions::Permissions;

/// The type of a direct builtin's parameter or result, as the tier reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Map,
    Array,
    Bool,
}

/// One builtin compiled code may call without Rhai.
pub(crate) struct Direct {
    pub(crate) name: &'static str,
    pub(crate) params: &'static [Kind],
    pub(crate) returns: Kind,
    /// The builtin on these arguments, checked against these grants; `None` where the registered
    /// function would raise an error (the call then runs in Rhai, which raises it).
    pub(crate) call: fn(&Permissions, &[Dynamic]) -> Option<Dynamic>,
    /// For a builtin that makes an array of strings, a loop over them with none made: `f` on
    /// each while it answers true (see [`Pieces`]).
    pub(crate) pieces: Option<Pieces>,
}

/// `f` on each string of a result while `f` answers true: whether it saw them all, or `None`
/// (before any) where the builtin would raise an error.
pub(crate) type Pieces = fn(&[Dynamic], f: &mut dyn FnMut(&str) -> bool) -> Option<bool>;

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.params.len())
    }
}

impl PartialEq for Direct {
    fn eq(&self, other: &Direct) -> bool {
        std::ptr::eq(self, other)
    }
}

/// Every direct builtin; each is registered once, by [`register`], under its name and arity.
pub(crate) const DIRECT: &[Direct] = &[
    Direct {
        name: "read_file",
        params: &[Kind::Str],
        returns: Kind::Str,
        call: |p, args| done(files::read_text(p, &str(&args[0])?)),
        pieces: None,
    },
    Direct {
        name: "read_lines",
        params: &[Kind::Str],
        returns: Kind::Array,
        call: |p, args| done(files::read_lines(p, &str(&args[0])?, Range::default())),
        pieces: None,
    },
    Direct {
        name: "read_lines",
        params: &[Kind::Str, Kind::Map],
        returns: Kind::Array,
        call: |p, args| {
            let range = Range::from_map(&*args[1].read_lock::<Map>()?).ok()?;
            done(files::read_lines(p, &str(&args[0])?, range))
        },
        pieces: None,
    },
    Direct {
        name: "regex_find_all",
        params: &[Kind::Str, Kind::Str],
        returns: Kind::Array,
        call: |_, args| done(text::find_all(&str(&args[0])?, &str(&args[1])?)),
        pieces: Some(|args, f| text::each_match(&str(&args[0])?, &str(&args[1])?, f).ok()),
    },
    Direct {
        name: "regex_is_match",
        params: &[Kind::Str, Kind::Str],
        returns: Kind::Bool,
        call: |_, args| done(text::is_match(&str(&args[0])?, &str(&args[1])?)),
        pieces: None,
    },
];

/// A builtin's result as compiled code takes it: its value, or `None` for an error, which Rhai
/// then raises by running the call itself.
fn done<T: Into<Dynamic>>(result: super::Result<T>) -> Option<Dynamic> {
    result.ok().map(Into::into)
}

fn str(value: &Dynamic) -> Option<ImmutableString> {
    value.read_lock::<ImmutableString>().map(|s| s.clone())
}

/// Registers the builtins of [`DIRECT`] as the module Rhai calls, each through the same function
/// compiled code calls.
pub(super) fn register(engine: &mut rhai::Engine, permissions: &std::sync::Arc<Permissions>) {
    let mut module = Module::new();
    let volatile = |name| FuncRegistration::new(name).with_volatility(true);
    let p = permissions.clone();
    volatile("read_file")
        .set_into_module(&mut module, move |path: &str| files::read_text(&p, path));
    let p = permissions.clone();
    volatile("read_lines").set_into_module(&mut module, move |path: &str| {
        files::read_lines(&p, path, Range::default())
    });
    let p = permissions.clone();
    volatile("read_lines").set_into_module(&mut module, move |path: &str, range: Map| {
        files::read_lines(&p, path, Range::from_map(&range)?)
    });
    FuncRegistration::new("regex_find_all").set_into_module(&mut module, text::find_all);
    FuncRegistration::new("regex_is_match").set_into_module(&mut module, text::is_match);
    engine.register_global_module(module.into());
}
