//! Values that cross process boundaries: an explicit wire enum, because postcard cannot decode Rhai's `Dynamic`.

use std::{
    cell::Cell,
    collections::HashMap,
    marker::PhantomData,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use rhai::{Array, Blob, Dynamic, FnPtr, ImmutableString, Map, ScriptFuncDef, Shared};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    Error,
    builtins::shared::{SharedArray, SharedKind, SharedValue},
    shared::Segment,
};

/// How deep arrays, maps and function values may nest in a value that is sent.
pub(crate) const MAX_DEPTH: usize = 128;

/// A script value in a form that can be sent to another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Value {
    /// `()`
    Unit,
    /// `true` / `false`
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A character.
    Char(char),
    /// A string: Rhai's own, shared, so sending one does not copy it before it is encoded.
    Str(#[serde(serialize_with = "str_ser", deserialize_with = "str_de")] ImmutableString),
    /// A blob of bytes.
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An array whose items are all integers (a compact fast path).
    IntArray(Vec<i64>),
    /// An array whose items are all floats (a compact fast path).
    FloatArray(Vec<f64>),
    /// An array whose items are all booleans (a compact fast path: a predicate's map results),
    /// one byte each on the wire.
    BoolArray(#[serde(serialize_with = "bools_ser", deserialize_with = "bools_de")] Vec<bool>),
    /// Any other array.
    Array(#[serde(serialize_with = "nested_ser", deserialize_with = "nested_de")] Vec<Value>),
    /// An object map, keys in order.
    Map(#[serde(serialize_with = "nested_ser", deserialize_with = "nested_de")] Vec<(Key, Value)>),
    /// A function value: its name and curried (captured) values.
    Fn(#[serde(serialize_with = "nested_ser", deserialize_with = "nested_de")] Box<FnValue>),
    /// A queue handle, by id; `bounded` queues can make a `put` wait.
    Queue { id: u64, bounded: bool },
    /// A process handle, by id and OS pid.
    Process {
        /// The runtime's id of the process.
        id: u64,
        /// The OS process id of the worker running it.
        pid: u32,
    },
    /// A future, lock, semaphore, event or barrier, by kind and id.
    Handle { kind: HandleKind, id: u64 },
    /// A shared array (or, `one`, a shared value): the process that made its memory and the
    /// descriptor there, its length, and what it holds.
    Shared {
        owner: u32,
        fd: i32,
        len: u64,
        kind: SharedKind,
        one: bool,
    },
    /// A supervisor: the process that runs it.
    Supervisor {
        /// The runtime's id of the supervisor process.
        id: u64,
        /// Its OS process id.
        pid: u32,
    },
}

/// The kinds of object, besides queues and processes, that live in the main process and are
/// named by handles that any process can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HandleKind {
    /// `pool_submit`'s result.
    Future,
    /// `lock()`
    Lock,
    /// `rlock()`
    RLock,
    /// `condition()`
    Condition,
    /// `semaphore(n)`
    Semaphore,
    /// `event()`
    Event,
    /// `barrier(n)`
    Barrier,
    /// `shared_map()`
    SharedMap,
}

/// A script-visible handle of kind `K` (see [`kinds`]): only an id, the object lives in the main
/// process.
///
/// ```
/// use mpscript::handles::{Handle, kinds};
/// let runtime = mpscript::Runtime::builder().build();
/// let lock: Handle<kinds::Lock> = runtime.eval("let l = lock(); l.acquire(); l").unwrap();
/// let event: Handle<kinds::Event> = runtime.eval("event()").unwrap();
/// # let _ = (lock, event);
/// ```
pub struct Handle<K> {
    pub(crate) id: u64,
    pub(crate) held: Option<Held>,
    kind: PhantomData<K>,
}

impl<K> Handle<K> {
    /// A handle nobody counts (made outside the main script, or for a host).
    pub(crate) fn new(id: u64) -> Self {
        Handle::counted(id, None)
    }

    /// A handle of the main script, counted by `held`.
    pub(crate) fn counted(id: u64, held: Option<Held>) -> Self {
        Handle {
            id,
            held,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for Handle<K> {
    fn clone(&self) -> Self {
        Handle::counted(self.id, self.held.clone())
    }
}

impl<K> PartialEq for Handle<K> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// The script name and wire kind of each [`Handle`] type.
pub trait Kind: Send + Sync + 'static {
    /// The wire kind.
    const KIND: HandleKind;
    /// The name scripts see (`type_of`, printing).
    const NAME: &'static str;
}

/// The marker types of [`Handle`]s.
pub mod kinds {
    macro_rules! kind {
        ($($name:ident),*) => {$(
            #[doc = concat!("Marks a handle to a ", stringify!($name), ".")]
            pub enum $name {}
            impl super::Kind for $name {
                const KIND: super::HandleKind = super::HandleKind::$name;
                const NAME: &'static str = stringify!($name);
            }
        )*};
    }
    kind!(
        Future, Lock, RLock, Condition, Semaphore, Event, Barrier, SharedMap
    );
}

/// A script-visible handle to a supervisor (see `supervise`).
///
/// ```no_run
/// // In the host's main (supervisors are worker processes; see `run_worker_if_requested`):
/// mpscript::run_worker_if_requested();
/// let runtime = mpscript::Runtime::builder().build();
/// let children: i64 = runtime
///     .eval("let sup = supervise([|| sleep(30)]); let n = sup.children().len(); sup.stop(); n")
///     .unwrap();
/// assert_eq!(children, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorHandle {
    pub(crate) process: ProcessHandle,
}

/// A function value on the wire: the name Rhai resolves it by, plus curried values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FnValue {
    /// A script function name, a native function name, or a closure's `anon$...` name.
    pub(crate) name: String,
    /// Values bound before the call's own arguments (a closure's captured variables).
    pub(crate) curry: Vec<Value>,
}

/// A script-visible handle to a queue that lives in the main process.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    pub(crate) id: u64,
    pub(crate) bounded: bool,
    pub(crate) held: Option<Held>,
}

/// A script-visible handle to a spawned process (or to the main process: id 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessHandle {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    #[serde(skip)]
    pub(crate) held: Option<Held>,
}

/// Handles are equal when they name the same object, whoever counts them.
impl PartialEq for ProcessHandle {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ProcessHandle {}

impl PartialEq for QueueHandle {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for QueueHandle {}

impl ProcessHandle {
    /// A handle nobody counts (the main process, or one made outside the main script).
    pub(crate) fn new(id: u64, pid: u32) -> ProcessHandle {
        ProcessHandle {
            id,
            pid,
            held: None,
        }
    }
}

/// The main script's count of its handles to one object of the hub: once the last copy is
/// dropped, `release` runs, so the hub can free the object's record when it is done with it. A
/// handle that was sent to another process pins the record for the rest of the run instead
/// (other processes do not count their copies), and so do handles made in other processes.
#[derive(Clone)]
pub(crate) struct Held(Arc<HeldBy>);

struct HeldBy {
    sent: AtomicBool,
    release: Box<dyn Fn() + Send + Sync>,
}

impl Held {
    pub(crate) fn new(release: impl Fn() + Send + Sync + 'static) -> Held {
        Held(Arc::new(HeldBy {
            sent: AtomicBool::new(false),
            release: Box::new(release),
        }))
    }

    /// A copy of the handle is going to another process.
    fn sent(&self) {
        self.0.sent.store(true, Ordering::Relaxed);
    }
}

impl Drop for HeldBy {
    fn drop(&mut self) {
        if !self.sent.load(Ordering::Relaxed) {
            (self.release)();
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static DEPTH_EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the last encode or decode on this thread failed on the nesting limit (and clears it),
/// because postcard's errors do not carry a custom message.
pub(crate) fn depth_exceeded() -> bool {
    DEPTH_EXCEEDED.with(|f| f.replace(false))
}

/// Counts nesting while serde recurses, so a hostile frame cannot overflow the stack.
struct DepthGuard;

/// How deep the codec lets values nest: a script value's limit, plus the arrays a message wraps
/// values in (a chunk of items, its results), so every value that converts also encodes.
const CODEC_DEPTH: usize = MAX_DEPTH + 2;

impl DepthGuard {
    fn enter() -> Option<DepthGuard> {
        DEPTH.with(|d| {
            if d.get() >= CODEC_DEPTH {
                DEPTH_EXCEEDED.with(|f| f.set(true));
                None
            } else {
                d.set(d.get() + 1);
                Some(DepthGuard)
            }
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// A map's key: Rhai's own small string (inline up to 23 bytes), so a map decodes without
/// allocating for its short keys (2 of the main process's 7 instructions per received entry went
/// to allocating a `String` in the reader thread and freeing it in the script's) and Rhai's map
/// takes each key as it is. On the wire, a `str`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key(pub(crate) rhai::Identifier);

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key(s.into())
    }
}

impl std::ops::Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key::from(s))
            }
        }
        d.deserialize_str(Text)
    }
}

/// A string as postcard's `str` (the wire format of a `String`).
fn str_ser<S: Serializer>(s: &ImmutableString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s)
}

/// A string decoded into its own buffer, which becomes Rhai's string without another copy.
fn str_de<'de, D: Deserializer<'de>>(d: D) -> Result<ImmutableString, D::Error> {
    String::deserialize(d).map(ImmutableString::from)
}

fn bools_ser<S: Serializer>(bools: &[bool], serializer: S) -> Result<S::Ok, S::Error> {
    let bytes: Vec<u8> = bools.iter().map(|&b| u8::from(b)).collect();
    serializer.serialize_bytes(&bytes)
}

/// Booleans sent as bytes: decoded as one slice, not a visit per element.
fn bools_de<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<bool>, D::Error> {
    let bytes = serde_bytes::ByteBuf::deserialize(d)?;
    bytes
        .iter()
        .map(|&b| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(serde::de::Error::custom(format!("{b} is not a boolean"))),
        })
        .collect()
}

fn nested_ser<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    let _guard = DepthGuard::enter().ok_or_else(|| {
        serde::ser::Error::custom(format!("value nested deeper than {MAX_DEPTH} levels"))
    })?;
    value.serialize(s)
}

fn nested_de<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let _guard = DepthGuard::enter().ok_or_else(|| {
        serde::de::Error::custom(format!("value nested deeper than {MAX_DEPTH} levels"))
    })?;
    T::deserialize(d)
}

impl Value {
    /// Number of items when this is an array value.
    pub(crate) fn array_len(&self) -> Option<usize> {
        match self {
            Value::IntArray(v) => Some(v.len()),
            Value::FloatArray(v) => Some(v.len()),
            Value::BoolArray(v) => Some(v.len()),
            Value::Array(v) => Some(v.len()),
            _ => None,
        }
    }

    /// An empty array value of the compact kind (ints, floats, booleans) `first` is of, with room
    /// for `capacity` items, else an empty plain one.
    pub(crate) fn array_for(first: &Dynamic, capacity: usize) -> Value {
        if first.is_int() {
            Value::IntArray(Vec::with_capacity(capacity))
        } else if first.is_float() {
            Value::FloatArray(Vec::with_capacity(capacity))
        } else if first.is_bool() {
            Value::BoolArray(Vec::with_capacity(capacity))
        } else {
            Value::Array(Vec::new())
        }
    }

    /// Whether this is a compact array value (of ints, floats or booleans).
    pub(crate) fn is_compact(&self) -> bool {
        matches!(
            self,
            Value::IntArray(_) | Value::FloatArray(_) | Value::BoolArray(_)
        )
    }

    /// Appends `item` to a compact array value of its kind; `false`, and nothing done, if it is
    /// of another kind or this is not a compact array.
    pub(crate) fn push_compact(&mut self, item: &Dynamic) -> bool {
        match self {
            Value::IntArray(v) => item.as_int().map(|x| v.push(x)).is_ok(),
            Value::FloatArray(v) => item.as_float().map(|x| v.push(x)).is_ok(),
            Value::BoolArray(v) => item.as_bool().map(|x| v.push(x)).is_ok(),
            _ => false,
        }
    }

    /// The elements of an array value, whichever form it has; any other value alone.
    pub(crate) fn into_items(self) -> Vec<Value> {
        match self {
            Value::IntArray(v) => v.into_iter().map(Value::Int).collect(),
            Value::FloatArray(v) => v.into_iter().map(Value::Float).collect(),
            Value::BoolArray(v) => v.into_iter().map(Value::Bool).collect(),
            Value::Array(v) => v,
            other => vec![other],
        }
    }

    /// Roughly how many bytes this value takes on the wire.
    pub(crate) fn wire_size(&self) -> usize {
        match self {
            Value::Str(s) => s.len() + 2,
            Value::Blob(b) => b.len() + 2,
            Value::IntArray(v) => v.len() * 8,
            Value::FloatArray(v) => v.len() * 8,
            Value::BoolArray(v) => v.len(),
            Value::Array(v) => v.iter().map(Value::wire_size).sum(),
            Value::Map(v) => v.iter().map(|(k, v)| k.len() + v.wire_size()).sum(),
            Value::Fn(f) => f.name.len() + f.curry.iter().map(Value::wire_size).sum::<usize>(),
            _ => 9,
        }
    }

    /// Items `start..end` of an array value, as an array value of the same kind.
    pub(crate) fn slice(&self, start: usize, end: usize) -> Value {
        match self {
            Value::IntArray(v) => Value::IntArray(v[start..end].to_vec()),
            Value::FloatArray(v) => Value::FloatArray(v[start..end].to_vec()),
            Value::BoolArray(v) => Value::BoolArray(v[start..end].to_vec()),
            Value::Array(v) => Value::Array(v[start..end].to_vec()),
            other => other.clone(),
        }
    }

    /// The value, if it fits in one message; a clear error if it is over the frame limit (so
    /// sending it fails at the call site, never later on the way).
    pub(crate) fn fits_a_frame(self) -> Result<Value, Error> {
        self.frame_size().map(|_| self)
    }

    /// About how many bytes the value takes in a message, if it fits in one.
    pub(crate) fn frame_size(&self) -> Result<usize, Error> {
        let size = self.wire_size();
        if size > crate::wire::MAX_VALUE {
            return Err(crate::wire::over_the_frame_limit(size));
        }
        Ok(size)
    }

    /// Converts a script value, refusing what cannot cross a process boundary.
    pub(crate) fn from_dynamic(value: &Dynamic) -> Result<Value, Error> {
        to_value(value, 0)
    }

    /// Converts the elements of an array as separate values (each with the whole nesting limit),
    /// into one array value: the items of a `pool_map`.
    pub(crate) fn from_elements(items: &[Dynamic]) -> Result<Value, Error> {
        array_value(items, 0)
    }

    /// Converts into a script value; closures are resolved through `fns`.
    pub(crate) fn into_dynamic(self, fns: &FnTable) -> Dynamic {
        match self {
            Value::Unit => Dynamic::UNIT,
            Value::Bool(b) => b.into(),
            Value::Int(i) => i.into(),
            Value::Float(f) => f.into(),
            Value::Char(c) => c.into(),
            Value::Str(s) => s.into(),
            Value::Blob(b) => Dynamic::from_blob(b),
            Value::IntArray(v) => Dynamic::from_array(v.into_iter().map(Dynamic::from).collect()),
            Value::FloatArray(v) => Dynamic::from_array(v.into_iter().map(Dynamic::from).collect()),
            Value::BoolArray(v) => Dynamic::from_array(v.into_iter().map(Dynamic::from).collect()),
            Value::Array(v) => {
                Dynamic::from_array(v.into_iter().map(|x| x.into_dynamic(fns)).collect())
            }
            Value::Map(entries) => {
                let map: Map = entries
                    .into_iter()
                    .map(|(k, v)| (k.0, v.into_dynamic(fns)))
                    .collect();
                Dynamic::from_map(map)
            }
            Value::Fn(f) => Dynamic::from(f.into_fn_ptr(fns)),
            Value::Queue { id, bounded } => Dynamic::from(QueueHandle {
                id,
                bounded,
                held: None,
            }),
            Value::Process { id, pid } => Dynamic::from(ProcessHandle::new(id, pid)),
            Value::Handle { kind, id } => handle_dynamic(kind, id),
            Value::Shared {
                owner,
                fd,
                len,
                kind,
                one,
            } => {
                let segment = Segment::attach(owner, fd, len as usize)
                    .map_err(|e| format!("process {owner}, which made it, is gone ({e})").into());
                let array = SharedArray { kind, segment };
                if one {
                    Dynamic::from(SharedValue(array))
                } else {
                    Dynamic::from(array)
                }
            }
            Value::Supervisor { id, pid } => Dynamic::from(SupervisorHandle {
                process: ProcessHandle::new(id, pid),
            }),
        }
    }
}

impl FnValue {
    /// Converts a Rhai function pointer and its curried values.
    pub(crate) fn from_fn_ptr(f: &FnPtr) -> Result<FnValue, Error> {
        fn_value(f, 0)
    }

    /// Rebuilds the Rhai function pointer; closures are looked up by name in `fns`.
    pub(crate) fn into_fn_ptr(self, fns: &FnTable) -> FnPtr {
        let mut ptr = fns.fn_ptr(&self.name);
        ptr.set_curry(self.curry.into_iter().map(|v| v.into_dynamic(fns)));
        ptr
    }
}

fn fn_value(f: &FnPtr, depth: usize) -> Result<FnValue, Error> {
    Ok(FnValue {
        name: f.fn_name().to_string(),
        curry: f
            .iter_curry()
            .map(|v| to_value(v, depth + 1))
            .collect::<Result<_, _>>()?,
    })
}

fn to_value(value: &Dynamic, depth: usize) -> Result<Value, Error> {
    if depth >= MAX_DEPTH {
        return Err(Error::TooDeep { limit: MAX_DEPTH });
    }
    if value.is_shared() {
        return to_value(&value.flatten_clone(), depth);
    }
    if value.is_unit() {
        return Ok(Value::Unit);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Int(i));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Value::Float(f));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::Char(c));
    }
    if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
        return Ok(Value::Str(s.clone()));
    }
    if let Some(b) = value.read_lock::<Blob>() {
        return Ok(Value::Blob(b.clone()));
    }
    if let Some(a) = value.read_lock::<Array>() {
        return array_value(&a, depth + 1);
    }
    if let Some(m) = value.read_lock::<Map>() {
        let entries = m
            .iter()
            .map(|(k, v)| Ok((Key(k.clone()), to_value(v, depth + 1)?)))
            .collect::<Result<_, Error>>()?;
        return Ok(Value::Map(entries));
    }
    if let Some(f) = value.read_lock::<FnPtr>() {
        return Ok(Value::Fn(Box::new(fn_value(&f, depth)?)));
    }
    if let Some(q) = value.read_lock::<QueueHandle>() {
        q.held.as_ref().map(Held::sent);
        return Ok(Value::Queue {
            id: q.id,
            bounded: q.bounded,
        });
    }
    if let Some(p) = value.read_lock::<ProcessHandle>() {
        p.held.as_ref().map(Held::sent);
        return Ok(Value::Process {
            id: p.id,
            pid: p.pid,
        });
    }
    if let Some(shared) = value
        .read_lock::<SharedArray>()
        .map(|a| (a.clone(), false))
        .or_else(|| {
            value
                .read_lock::<SharedValue>()
                .map(|v| (v.0.clone(), true))
        })
    {
        return shared_value(&shared.0, shared.1);
    }
    if let Some(s) = value.read_lock::<SupervisorHandle>() {
        return Ok(Value::Supervisor {
            id: s.process.id,
            pid: s.process.pid,
        });
    }
    handle_value(value).ok_or_else(|| Error::NotSendable {
        type_name: script_type_name(value),
    })
}

fn handle_dynamic(kind: HandleKind, id: u64) -> Dynamic {
    use kinds::*;
    match kind {
        HandleKind::Future => Dynamic::from(Handle::<Future>::new(id)),
        HandleKind::Lock => Dynamic::from(Handle::<Lock>::new(id)),
        HandleKind::RLock => Dynamic::from(Handle::<RLock>::new(id)),
        HandleKind::Condition => Dynamic::from(Handle::<Condition>::new(id)),
        HandleKind::Semaphore => Dynamic::from(Handle::<Semaphore>::new(id)),
        HandleKind::Event => Dynamic::from(Handle::<Event>::new(id)),
        HandleKind::Barrier => Dynamic::from(Handle::<Barrier>::new(id)),
        HandleKind::SharedMap => Dynamic::from(Handle::<SharedMap>::new(id)),
    }
}

fn handle_value(value: &Dynamic) -> Option<Value> {
    fn of<K: Kind>(value: &Dynamic) -> Option<Value> {
        value.read_lock::<Handle<K>>().map(|h| {
            h.held.as_ref().map(Held::sent);
            Value::Handle {
                kind: K::KIND,
                id: h.id,
            }
        })
    }
    use kinds::*;
    of::<Future>(value)
        .or_else(|| of::<Lock>(value))
        .or_else(|| of::<RLock>(value))
        .or_else(|| of::<Condition>(value))
        .or_else(|| of::<Semaphore>(value))
        .or_else(|| of::<Event>(value))
        .or_else(|| of::<Barrier>(value))
        .or_else(|| of::<SharedMap>(value))
}

/// An array whose elements are at `depth`: a compact one when every element is of its kind.
fn array_value(items: &[Dynamic], depth: usize) -> Result<Value, Error> {
    if let Some(first) = items.first() {
        let mut compact = Value::array_for(first, items.len());
        if compact.is_compact() && items.iter().all(|d| compact.push_compact(d)) {
            return Ok(compact);
        }
    }
    items
        .iter()
        .map(|d| to_value(d, depth))
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// The name a script would see from `type_of`, for error messages.
fn script_type_name(value: &Dynamic) -> String {
    let name = value.type_name();
    match name.rsplit("::").next() {
        Some("Instant") => "timestamp".into(),
        Some(short) => short.into(),
        None => name.into(),
    }
}

/// Script functions of a compiled program by name, so closures received from another process
/// (named `anon$<hash>`, which `FnPtr::new` refuses) can be rebuilt as callable function pointers.
#[derive(Default, Clone)]
pub(crate) struct FnTable {
    fns: Arc<RwLock<HashMap<String, Shared<ScriptFuncDef>>>>,
}

impl FnTable {
    /// Adds the script functions of a compiled program (a REPL adds one chunk at a time).
    pub(crate) fn add(&self, ast: &rhai::AST) {
        let mut fns = self.fns.write().unwrap_or_else(|e| e.into_inner());
        for def in ast.iter_fn_def() {
            fns.insert(def.name.to_string(), def.clone());
        }
    }

    fn fn_ptr(&self, name: &str) -> FnPtr {
        let fns = self.fns.read().unwrap_or_else(|e| e.into_inner());
        match fns.get(name) {
            Some(def) => FnPtr::from(def.clone()),
            // Named script functions and native functions resolve by name at call time; a name
            // that resolves to nothing fails there with Rhai's own "Function not found". A closure
            // missing here (the program differs from the sender's) gets a name that says so.
            None => FnPtr::new(name).unwrap_or_else(|_| {
                FnPtr::new("closure_not_in_this_program").expect("valid identifier")
            }),
        }
    }
}

/// A shared array's wire form; its memory stays where it is, kept open for the receiver.
fn shared_value(array: &SharedArray, one: bool) -> Result<Value, Error> {
    let segment = array.segment.as_ref().map_err(|why| {
        Error::InvalidArgument(format!("this shared array cannot be reached: {why}"))
    })?;
    segment.sent();
    Ok(Value::Shared {
        owner: segment.owner,
        fd: segment.fd,
        len: segment.slots().len() as u64,
        kind: array.kind,
        one,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let bytes = postcard::to_stdvec(v).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn every_kind_round_trips_through_postcard() {
        let v = Value::Array(vec![
            Value::Unit,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Float(-0.5),
            Value::Char('ß'),
            Value::Str("héllo ✓".into()),
            Value::Blob(vec![0, 255, 7]),
            Value::IntArray(vec![1, 2]),
            Value::FloatArray(vec![f64::INFINITY]),
            Value::BoolArray(vec![true, false]),
            Value::Map(vec![("k".into(), Value::Int(1))]),
            Value::Fn(Box::new(FnValue {
                name: "anon$1".into(),
                curry: vec![Value::Int(3)],
            })),
            Value::Queue {
                id: 9,
                bounded: true,
            },
            Value::Process { id: 1, pid: 2 },
            Value::Handle {
                kind: HandleKind::Barrier,
                id: 3,
            },
            Value::Supervisor { id: 4, pid: 5 },
        ]);
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn a_boolean_array_is_one_byte_an_item_and_refuses_other_bytes() {
        let bools = Value::BoolArray(vec![true, false, true]);
        let bytes = postcard::to_stdvec(&bools).unwrap();
        assert_eq!(round_trip(&bools), bools);
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() = 2;
        assert!(postcard::from_bytes::<Value>(&bad).is_err());
        let many = postcard::to_stdvec(&Value::BoolArray(vec![true; 1000])).unwrap();
        assert!(many.len() < 1010, "{} bytes", many.len());
    }

    #[test]
    fn dynamic_arrays_take_the_fast_paths() {
        let ints: Dynamic = Dynamic::from_array(vec![1.into(), 2.into()]);
        assert_eq!(
            Value::from_dynamic(&ints).unwrap(),
            Value::IntArray(vec![1, 2])
        );
        let bools: Dynamic = Dynamic::from_array(vec![true.into(), false.into()]);
        assert_eq!(
            Value::from_dynamic(&bools).unwrap(),
            Value::BoolArray(vec![true, false])
        );
        let mixed: Dynamic = Dynamic::from_array(vec![1.into(), 2.5.into()]);
        assert!(matches!(
            Value::from_dynamic(&mixed).unwrap(),
            Value::Array(_)
        ));
    }

    fn nested(depth: usize) -> Dynamic {
        (0..depth).fold(Dynamic::from(1_i64), |inner, _| {
            Dynamic::from_array(vec![inner])
        })
    }

    #[test]
    fn conversion_refuses_values_nested_past_the_limit() {
        assert!(Value::from_dynamic(&nested(MAX_DEPTH - 2)).is_ok());
        let err = Value::from_dynamic(&nested(MAX_DEPTH + 5)).unwrap_err();
        assert!(matches!(err, Error::TooDeep { limit: MAX_DEPTH }), "{err}");
    }

    #[test]
    fn decoding_refuses_hostile_nesting_without_overflowing_the_stack() {
        // An array of length 1 holding another array, 100,000 deep.
        let array = postcard::to_stdvec(&Value::Array(Vec::new())).unwrap()[0];
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[array, 1]);
        }
        bytes.push(0);
        assert!(postcard::from_bytes::<Value>(&bytes).is_err());
        assert!(depth_exceeded());
    }

    #[test]
    fn non_sendable_values_name_their_type() {
        let ts = Dynamic::from(std::time::Instant::now());
        let err = Value::from_dynamic(&ts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a value of type `timestamp` cannot be sent to another process"
        );
    }
}
