//! The first back end: the typed form compiled to nested closures over a frame of unboxed 64-bit
//! slots (floats as their bits, bools as 0/1). Pure safe Rust; compiles in microseconds.

mod each;
mod heap;

use rhai::{Dynamic, EvalAltResult};

use super::{
    inline,
    ir::{BinOp, Block, Expr, Function, Stmt, Ty, UnOp},
    native, ops,
    shape::{self, Sink, Test, TestSink, Val},
};
use crate::{
    profile::{self, Recorder},
    stop::{StopCheck, terminate},
};

/// Why compiled code stopped early.
pub(crate) enum Bail {
    /// Rhai would raise an error here (overflow, division by zero, stack overflow): run the call
    /// again in Rhai, which raises it exactly.
    Fallback,
    /// A limit or a stop request that must be raised as it is (too many operations, Ctrl-C, a
    /// time limit).
    Stop(Box<EvalAltResult>),
    /// `break`, `continue` or `return` from inside an expression (an `if` used as a value).
    Escape(Flow),
}

/// How a statement ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Next,
    Break,
    Continue,
    Return,
    /// Stopped early: the reason is in [`Frame::bail`]. Statements answer a plain `Flow`
    /// rather than a `Result` because loops test it once per statement.
    Bail,
}

pub(super) type R<T> = Result<T, Bail>;
pub(super) type Ev<T> = Box<dyn Fn(&mut Frame<'_>) -> R<T> + Send + Sync>;
pub(super) type St = Box<dyn Fn(&mut Frame<'_>) -> Flow + Send + Sync>;

thread_local! {
    /// The slot stack, kept between calls so a call allocates nothing.
    static STACK: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
    /// While a profiled program is built, the profiler's frame of each of its functions: its
    /// calls record themselves. Read only while building closures, so a program built for an
    /// unprofiled run pays nothing.
    static RECORDED_FRAMES: std::cell::RefCell<Option<Vec<u32>>> =
        const { std::cell::RefCell::new(None) };
}

/// Operations between two looks at the stop request.
const STOP_CHECK_EVERY: u64 = 1024;

/// What bounds a compiled run: the engine's limits and the runtime's stop request.
pub(crate) struct Budget {
    pub(crate) max_operations: u64,
    pub(crate) max_depth: usize,
    pub(crate) stop: Option<StopCheck>,
}

/// Compiled recursion deeper than this goes back to Rhai, whatever the engine allows: compiled
/// calls nest native stack frames.
const NATIVE_DEPTH_CAP: usize = 1000;

impl Budget {
    /// `engine`'s operation and call-depth limits for an entry call that is itself at call level
    /// `level` (1 for a call from the top level), and `stop` checked every 1,024 operations.
    pub(crate) fn of(engine: &rhai::Engine, stop: Option<StopCheck>, level: usize) -> Budget {
        Budget {
            max_operations: engine.max_operations(),
            // Rhai allows calls up to level `max_call_levels`.
            max_depth: (engine.max_call_levels() + 1)
                .saturating_sub(level)
                .min(NATIVE_DEPTH_CAP),
            stop,
        }
    }
}

/// A running call: the program, a stack of slots, and the limit counters.
pub(crate) struct Frame<'p> {
    program: &'p [FnCode],
    stack: Vec<i64>,
    base: usize,
    /// `stack[base..]`: the running function's slots. Refreshed by [`Frame::enter_at`] whenever
    /// the base or the stack's allocation changes.
    slots: *mut i64,
    top: usize,
    ret: i64,
    /// The heap slots (see [`Ty::is_heap`]) of every active call; the running function's start
    /// at `heap_base`, the next call's at `heap_top`.
    heap: Vec<Dynamic>,
    heap_base: usize,
    heap_top: usize,
    /// A heap value returned.
    ret_heap: Dynamic,
    /// The element an updating `SetItem` replaces (see [`Expr::Item`]).
    item: Dynamic,
    /// Where `text += `..`` writes its parts before appending them in one go (see
    /// `heap::append_parts`), kept for the next one.
    scratch: String,
    /// Why a statement answered [`Flow::Bail`].
    bail: Option<Bail>,
    /// The entry call's array arguments, unboxed; an array parameter's slot holds its place here
    /// (only the entry function has array parameters: calls do not pass arrays).
    arrays: Vec<Vec<i64>>,
    depth: usize,
    ops: u64,
    next_check: u64,
    limits: &'p Budget,
    /// The profiler's record of the calls made here, in a profiled program.
    record: Option<Box<Recorder>>,
}

impl Frame<'_> {
    // Slots are read through a pointer because they are the innermost operation of every
    // compiled loop: indexing the stack cost a tenth of the instructions of a kernel.
    #[inline(always)]
    pub(super) fn slot(&self, slot: usize) -> i64 {
        debug_assert!(self.base + slot < self.stack.len());
        // SAFETY: lowering numbers a function's locals `0..slots`, `enter` made the stack at least
        // `base + slots` long, and `self.slots` points at `stack[base]` of the current allocation.
        unsafe { self.slots.add(slot).read() }
    }

    #[inline(always)]
    fn heap(&self, slot: usize) -> &Dynamic {
        &self.heap[self.heap_base + slot]
    }

    #[inline(always)]
    fn heap_mut(&mut self, slot: usize) -> &mut Dynamic {
        &mut self.heap[self.heap_base + slot]
    }

    #[inline(always)]
    fn set(&mut self, slot: usize, bits: i64) {
        debug_assert!(self.base + slot < self.stack.len());
        // SAFETY: as in `slot`.
        unsafe { self.slots.add(slot).write(bits) }
    }

    /// Writes `stack[at]` (a callee's argument) without invalidating `self.slots`.
    #[inline(always)]
    fn write(&mut self, at: usize, bits: i64) {
        assert!(at < self.stack.len());
        // SAFETY: in bounds (checked above); `as_mut_ptr` leaves pointers derived before valid.
        unsafe { self.stack.as_mut_ptr().add(at).write(bits) }
    }

    /// A statement's expression stopped: an escape is the statement's flow, anything else is
    /// kept for the expression that runs the statement (see [`Frame::resume`]).
    #[cold]
    fn stopped(&mut self, bail: Bail) -> Flow {
        match bail {
            Bail::Escape(flow) => flow,
            other => {
                self.bail = Some(other);
                Flow::Bail
            }
        }
    }

    /// The reason statements answered [`Flow::Bail`], back in the `Result` of expressions.
    #[cold]
    fn resume(&mut self) -> Bail {
        self.bail.take().unwrap_or(Bail::Fallback)
    }

    /// The array parameter in `slot`.
    #[inline(always)]
    fn array(&self, slot: usize) -> &[i64] {
        &self.arrays[self.slot(slot) as usize]
    }

    /// `array[index]` (bits), `None` where Rhai reports the index out of bounds.
    #[inline(always)]
    pub(super) fn element(&self, array: usize, index: i64) -> R<i64> {
        let values = self.array(array);
        let at = ops::element_at(values.len(), index).ok_or(Bail::Fallback)?;
        Ok(values[at])
    }

    fn array_mut(&mut self, slot: usize) -> &mut [i64] {
        let at = self.slot(slot) as usize;
        &mut self.arrays[at]
    }

    /// Makes `stack[base..]` the running function's slots.
    #[inline(always)]
    fn enter_at(&mut self, base: usize) {
        self.base = base;
        self.slots = self.stack.as_mut_ptr().wrapping_add(base);
    }

    #[inline]
    fn tick(&mut self, cost: u64) -> R<()> {
        self.ops += cost;
        if self.ops >= self.next_check {
            self.check()?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn check(&mut self) -> R<()> {
        let limits = self.limits;
        if limits.max_operations > 0 && self.ops > limits.max_operations {
            return Err(Bail::Stop(
                EvalAltResult::ErrorTooManyOperations(rhai::Position::NONE).into(),
            ));
        }
        if let Some(stop) = &limits.stop
            && let Some(reason) = stop()
        {
            return Err(Bail::Stop(terminate(reason)));
        }
        self.next_check = next_check(self.ops, limits);
        Ok(())
    }
}

fn next_check(ops: u64, limits: &Budget) -> u64 {
    let stop = if limits.stop.is_some() {
        ops + STOP_CHECK_EVERY
    } else {
        u64::MAX
    };
    let max = if limits.max_operations > 0 {
        limits.max_operations + 1
    } else {
        u64::MAX
    };
    stop.min(max)
}

/// One compiled specialization.
struct FnCode {
    ret: Ty,
    /// See [`ParamUses::keeps_heap`](crate::fast::ir::ParamUses::keeps_heap) and
    /// [`ParamUses::only_reads_heap`](crate::fast::ir::ParamUses::only_reads_heap).
    keeps_heap_params: bool,
    only_reads_heap_params: bool,
    /// The function as a comparer whose operands are computed once per element (not in a
    /// profiled program, which counts every call).
    keyed: Option<each::Keyed>,
    slots: usize,
    heap_slots: usize,
    entry_cost: u64,
    /// Runs the body; answers the return value's bits.
    body: Ev<i64>,
}

/// A compiled entry specialization and everything it calls.
pub(crate) struct Program {
    fns: Vec<FnCode>,
    entry: usize,
    params: Vec<Ty>,
    /// For each parameter of the entry function, whether its body may change it.
    changed: Vec<bool>,
    ret: Ty,
    profiled: bool,
}

/// A value crossing into or out of compiled code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Char(char),
    Unit,
}

impl Scalar {
    fn bits(self) -> i64 {
        match self {
            Scalar::Int(i) => i,
            Scalar::Float(f) => f.to_bits() as i64,
            Scalar::Bool(b) => b as i64,
            Scalar::Char(c) => c as i64,
            Scalar::Unit => 0,
        }
    }

    fn from_bits(ty: Ty, bits: i64) -> Scalar {
        match ty {
            Ty::Int => Scalar::Int(bits),
            Ty::Float => Scalar::Float(f64::from_bits(bits as u64)),
            Ty::Bool => Scalar::Bool(bits != 0),
            Ty::Char => Scalar::Char(char::from_u32(bits as u32).unwrap_or_default()),
            _ => Scalar::Unit,
        }
    }
}

impl Program {
    /// Compiles `functions`, entered at `entry`; `profiled`: every call inside records itself
    /// (and no call is inlined, so each is counted).
    pub(crate) fn new(functions: &[Function], entry: usize, profiled: bool) -> Program {
        let functions = match profiled {
            true => functions.to_vec(),
            false => inline::inline_calls(functions),
        };
        let frames = profiled.then(|| {
            let frame = |f: &Function| profile::Frame::Script {
                name: f.name.clone(),
                arity: f.params.len() as u32,
            };
            functions
                .iter()
                .map(|f| profile::intern(frame(f)))
                .collect()
        });
        RECORDED_FRAMES.set(frames);
        let fns = functions
            .iter()
            .map(|f| {
                let uses = f.param_uses(f.params.len());
                FnCode {
                    ret: f.ret,
                    keeps_heap_params: uses.keeps_heap(),
                    only_reads_heap_params: uses.only_reads_heap(),
                    keyed: (!profiled).then(|| each::Keyed::of(f)).flatten(),
                    slots: f.slots,
                    heap_slots: f.heap_slots,
                    entry_cost: f.entry_cost,
                    body: function_body(f),
                }
            })
            .collect();
        RECORDED_FRAMES.set(None);
        let params = &functions[entry].params;
        Program {
            fns,
            entry,
            changed: functions[entry].param_uses(params.len()).changed(params),
            params: params.clone(),
            ret: functions[entry].ret,
            profiled,
        }
    }

    /// Whether the entry function leaves its heap parameters as they came (see
    /// [`ParamUses::keeps_heap`](crate::fast::ir::ParamUses::keeps_heap)).
    pub(crate) fn keeps_heap_params(&self) -> bool {
        self.fns[self.entry].keeps_heap_params
    }

    /// For each parameter, whether the entry function may change it.
    pub(crate) fn changed_params(&self) -> &[bool] {
        &self.changed
    }

    /// Runs the entry function on `args` (whose types match its parameters; an array
    /// argument is given by its place in `arrays`, a heap value by its place in `heap`).
    /// `heap` holds the heap parameters again when it returns, as the function left them, and
    /// `args` the other parameters.
    pub(crate) fn call(
        &self,
        args: &mut [Scalar],
        heap: &mut Vec<Dynamic>,
        arrays: Vec<Vec<i64>>,
        limits: &Budget,
    ) -> R<Dynamic> {
        debug_assert_eq!(args.len(), self.params.len());
        let entry = &self.fns[self.entry];
        // Heap parameters are the first heap slots.
        let heap_params = heap.len();
        let mut heap_slots = std::mem::take(heap);
        heap_slots.resize(entry.heap_slots.max(heap_params), Dynamic::UNIT);
        let mut stack = STACK.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let need = entry.slots.max(args.len()) + 64;
        if stack.len() < need {
            stack.resize(need, 0);
        }
        let mut frame = Frame {
            program: &self.fns,
            stack,
            base: 0,
            slots: std::ptr::null_mut(),
            top: entry.slots,
            ret: 0,
            heap_top: heap_slots.len(),
            heap: heap_slots,
            heap_base: 0,
            ret_heap: Dynamic::UNIT,
            item: Dynamic::UNIT,
            scratch: String::new(),
            bail: None,
            arrays,
            depth: 1,
            ops: 0,
            next_check: next_check(0, limits),
            limits,
            record: if self.profiled {
                profile::nested().map(Box::new)
            } else {
                None
            },
        };
        let scalars = args.iter().zip(&self.params).filter(|(_, t)| !t.is_heap());
        for (i, (a, _)) in scalars.enumerate() {
            frame.stack[i] = a.bits();
        }
        frame.enter_at(0);
        let bits = frame
            .tick(entry.entry_cost)
            .and_then(|()| (entry.body)(&mut frame));
        let scalars = args
            .iter_mut()
            .zip(&self.params)
            .filter(|(_, t)| !t.is_heap());
        for (i, (a, ty)) in scalars.enumerate() {
            *a = Scalar::from_bits(*ty, frame.stack[i]);
        }
        STACK.with(|s| *s.borrow_mut() = frame.stack);
        *heap = frame.heap;
        heap.truncate(heap_params);
        let bits = bits?;
        // A run that bailed out is run again in Rhai, which records it then.
        if let Some(record) = frame.record {
            profile::absorb(*record);
        }
        Ok(match self.ret {
            ty if ty.is_heap() => frame.ret_heap,
            ty => super::dynamic(Scalar::from_bits(ty, bits)),
        })
    }
}

/// A function's body; a `return` from inside an expression is caught here.
fn function_body(f: &Function) -> Ev<i64> {
    let value = match f.ret.is_heap() {
        true => {
            let value = heap::dynamic(&f.body.value);
            Box::new(move |fr: &mut Frame<'_>| {
                fr.ret_heap = value(fr)?;
                Ok(0)
            })
        }
        false => bits(&f.body.value),
    };
    let value = if f.body.value.jumps() {
        Box::new(move |fr: &mut Frame<'_>| returned(value(fr), fr))
    } else {
        value
    };
    if f.body.stmts.is_empty() {
        return value;
    }
    let stmts = statements(&f.body.stmts);
    Box::new(move |fr| {
        for s in &stmts {
            match s(fr) {
                Flow::Next => {}
                Flow::Return => return Ok(fr.ret),
                Flow::Bail => return Err(fr.resume()),
                Flow::Break | Flow::Continue => return Err(Bail::Fallback),
            }
        }
        value(fr)
    })
}

/// A body's result: a `return` that escaped from an expression is the value returned.
#[inline(always)]
fn returned(result: R<i64>, fr: &Frame<'_>) -> R<i64> {
    match result {
        Err(Bail::Escape(Flow::Return)) => Ok(fr.ret),
        Err(Bail::Escape(_)) => Err(Bail::Fallback),
        other => other,
    }
}

fn statements(stmts: &[Stmt]) -> Vec<St> {
    stmts.iter().map(statement).collect()
}

/// Runs a block's statements; anything but `Next` ends it.
#[inline]
fn run(stmts: &[St], fr: &mut Frame<'_>) -> Flow {
    for s in stmts {
        let flow = s(fr);
        if flow != Flow::Next {
            return flow;
        }
    }
    Flow::Next
}

/// What a loop does after its body: `None` to go on, or the flow that ends the loop's statement.
#[inline(always)]
fn after_body(flow: Flow) -> Option<Flow> {
    match flow {
        Flow::Next | Flow::Continue => None,
        Flow::Break => Some(Flow::Next),
        other => Some(other),
    }
}

/// Charges a loop iteration: `Some` with the flow when a limit stops the loop.
#[inline(always)]
fn charged(fr: &mut Frame<'_>, cost: u64) -> Option<Flow> {
    match fr.tick(cost) {
        Ok(()) => None,
        Err(e) => Some(fr.stopped(e)),
    }
}

fn statement(stmt: &Stmt) -> St {
    if let Some(heap) = heap::statement(stmt) {
        return heap;
    }
    match stmt {
        Stmt::Store(slot, e) if e.ty() == Ty::Int => shape::wide(e, StoreTo(*slot)),
        Stmt::Store(slot, e) if e.ty() == Ty::Float => shape::float_wide(e, StoreTo(*slot)),
        Stmt::Store(slot, e) => {
            let (slot, value) = (*slot, bits(e));
            Box::new(move |fr| match value(fr) {
                Ok(v) => {
                    fr.set(slot, v);
                    Flow::Next
                }
                Err(e) => fr.stopped(e),
            })
        }
        // An `if` or a block in statement position: its control flow is the statement's.
        Stmt::Eval(Expr::If { cond, then, other }) => {
            let then = block_statement(then);
            let other = block_statement(other);
            shape::loop_condition(cond, IfStatement { then, other })
        }
        Stmt::Eval(Expr::Block(block)) => {
            let stmts = block_statements(block);
            Box::new(move |fr| run(&stmts, fr))
        }
        Stmt::Eval(e) => {
            let e = bits(e);
            Box::new(move |fr| match e(fr) {
                Ok(_) => Flow::Next,
                Err(e) => fr.stopped(e),
            })
        }
        Stmt::While { cond, body, cost } => {
            let body = block_statements(body);
            let cost = *cost;
            match cond {
                Some(cond) => shape::loop_condition(cond, WhileLoop { body, cost }),
                None => WhileLoop { body, cost }.take(shape::Always),
            }
        }
        Stmt::Do {
            body,
            cond,
            until,
            cost,
        } => {
            let cond = boolean(cond);
            let body = block_statements(body);
            let (until, cost) = (*until, *cost);
            Box::new(move |fr| {
                loop {
                    if let Some(flow) = charged(fr, cost) {
                        return flow;
                    }
                    if let Some(flow) = after_body(run(&body, fr)) {
                        return flow;
                    }
                    match cond(fr) {
                        Ok(c) if c == until => return Flow::Next,
                        Ok(_) => {}
                        Err(e) => return fr.stopped(e),
                    }
                }
            })
        }
        Stmt::For {
            var,
            counter,
            from,
            to,
            inclusive,
            body,
            cost,
        } => {
            let (from, to) = (int(from), int(to));
            let body = block_statements(body);
            let (var, counter, inclusive, cost) = (*var, *counter, *inclusive, *cost);
            Box::new(move |fr| {
                let (start, end) = match from(fr).and_then(|start| Ok((start, to(fr)?))) {
                    Ok(range) => range,
                    Err(e) => return fr.stopped(e),
                };
                let mut i = start;
                let mut n = 0;
                // `a..=i64::MAX` must not overflow the counter.
                while if inclusive { i <= end } else { i < end } {
                    if let Some(flow) = charged(fr, cost) {
                        return flow;
                    }
                    fr.set(var, i);
                    if let Some(c) = counter {
                        fr.set(c, n);
                    }
                    if let Some(flow) = after_body(run(&body, fr)) {
                        return flow;
                    }
                    if i == end {
                        break;
                    }
                    i += 1;
                    n += 1;
                }
                Flow::Next
            })
        }
        Stmt::SetIndex {
            array,
            index,
            value,
        } => {
            let (array, index, value) = (*array, int(index), bits(value));
            Box::new(move |fr| {
                let stored = index(fr).and_then(|i| {
                    let v = value(fr)?;
                    let values = fr.array_mut(array);
                    let at = ops::element_at(values.len(), i).ok_or(Bail::Fallback)?;
                    values[at] = v;
                    Ok(())
                });
                match stored {
                    Ok(()) => Flow::Next,
                    Err(e) => fr.stopped(e),
                }
            })
        }
        Stmt::StoreHeap(..) | Stmt::SetItem { .. } | Stmt::ForEach { .. } => {
            unreachable!("heap statements are built by `heap::statement`")
        }
        Stmt::Break => Box::new(|_| Flow::Break),
        Stmt::Continue => Box::new(|_| Flow::Continue),
        Stmt::Return(e) => {
            let e = bits(e);
            Box::new(move |fr| match e(fr) {
                Ok(v) => {
                    fr.ret = v;
                    Flow::Return
                }
                Err(e) => fr.stopped(e),
            })
        }
    }
}

/// A block in statement position: its statements, then its value (evaluated for its errors).
pub(super) fn block_statements(block: &Block) -> Vec<St> {
    let mut stmts = statements(&block.stmts);
    if !matches!(block.value, Expr::Unit) {
        stmts.push(statement(&Stmt::Eval(block.value.clone())));
    }
    stmts
}

/// A block in statement position as one statement, `None` when it does nothing.
fn block_statement(block: &Block) -> Option<St> {
    let mut stmts = block_statements(block);
    match stmts.len() {
        0 => None,
        1 => stmts.pop(),
        _ => Some(Box::new(move |fr| run(&stmts, fr))),
    }
}

/// A block used as a value; control flow leaving it escapes as [`Bail::Escape`].
pub(super) fn block_value<T: 'static>(block: &Block, value: Ev<T>) -> Ev<T> {
    if block.stmts.is_empty() {
        return value;
    }
    let stmts = statements(&block.stmts);
    Box::new(move |fr| match run(&stmts, fr) {
        Flow::Next => value(fr),
        Flow::Bail => Err(fr.resume()),
        flow => Err(Bail::Escape(flow)),
    })
}

/// Any scalar expression, as the bits of its value.
fn bits(e: &Expr) -> Ev<i64> {
    match e.ty() {
        Ty::Char => code(e),
        Ty::Int => int(e),
        Ty::Float => {
            let f = float(e);
            Box::new(move |fr| f(fr).map(|x| x.to_bits() as i64))
        }
        Ty::Bool => {
            let b = boolean(e);
            Box::new(move |fr| b(fr).map(i64::from))
        }
        Ty::Unit => {
            let u = unit(e);
            Box::new(move |fr| u(fr).map(|()| 0))
        }
        Ty::IntArray | Ty::FloatArray => unreachable!("arrays are only indexed and measured"),
        ty => unreachable!("a heap value ({ty:?}) has no bits"),
    }
}

/// The forms every type shares: slots, `if`, blocks and calls.
macro_rules! common {
    ($e:expr, $this:ident, $from_bits:expr) => {
        if let Some(value) = heap::scalar_bits($e) {
            return Box::new(move |fr| value(fr).map($from_bits));
        }
        match $e {
            Expr::Load(slot, _) => {
                let slot = *slot;
                return Box::new(move |fr| Ok($from_bits(fr.slot(slot))));
            }
            Expr::If { cond, then, other } => {
                let then = block_value(then, $this(&then.value));
                let other = block_value(other, $this(&other.value));
                return shape::condition(cond, IfValue { then, other });
            }
            Expr::Block(block) => return block_value(block, $this(&block.value)),
            Expr::Index { array, index, .. } => {
                let element = shape::leafy(index, ElementOf(*array));
                return Box::new(move |fr| element(fr).map($from_bits));
            }
            Expr::Inlined {
                params,
                body,
                entry_cost,
            } => {
                let value = block_value(body, $this(&body.value));
                return inlined(params, value, *entry_cost);
            }
            Expr::Call { callee, args, .. } => {
                let call = call(*callee, args);
                return Box::new(move |fr| call(fr).map($from_bits));
            }
            Expr::CallUnboxing { callees, args, .. } => {
                let call = call_unboxing(callees, args);
                return Box::new(move |fr| call(fr).map($from_bits));
            }
            _ => {}
        }
    };
}

pub(super) fn int(e: &Expr) -> Ev<i64> {
    match e {
        Expr::Load(..) | Expr::Int(_) | Expr::Binary { .. } => return shape::wide(e, Boxed),
        Expr::Call { callee, args, .. } => return call(*callee, args), // no wrapper needed
        Expr::CallUnboxing { callees, args, .. } => return call_unboxing(callees, args),
        Expr::Index { array, index, .. } => return shape::leafy(index, ElementOf(*array)),
        Expr::Len(array) => {
            let array = *array;
            return Box::new(move |fr| Ok(fr.array(array).len() as i64));
        }
        Expr::If { cond, then, other } => return shape::int_if(cond, then, other),
        _ => {}
    }
    common!(e, int, |b: i64| b);
    match e {
        Expr::Unary { op, arg } => match op {
            UnOp::Neg => {
                let a = int(arg);
                Box::new(move |fr| a(fr)?.checked_neg().ok_or(Bail::Fallback))
            }
            UnOp::Abs => {
                let a = int(arg);
                Box::new(move |fr| a(fr)?.checked_abs().ok_or(Bail::Fallback))
            }
            UnOp::ToInt => {
                let f = float(arg);
                Box::new(move |fr| ops::float_to_int(f(fr)?).ok_or(Bail::Fallback))
            }
            other => unreachable!("{other:?} on int"),
        },
        other => unreachable!("not an int expression: {other:?}"),
    }
}

pub(super) fn float(e: &Expr) -> Ev<f64> {
    common!(e, float, |b: i64| f64::from_bits(b as u64));
    match e {
        Expr::Float(_) | Expr::Binary { .. } => shape::float_wide(e, Boxed),
        Expr::Unary {
            op: UnOp::ToFloat,
            arg,
        } => shape::wide(arg, IntAsFloat),
        Expr::Unary { op, arg } => {
            let a = float(arg);
            let f: fn(f64) -> f64 = match op {
                UnOp::Neg => |x| -x,
                UnOp::Abs => f64::abs,
                UnOp::Sqrt => f64::sqrt,
                UnOp::Floor => f64::floor,
                UnOp::Ceiling => f64::ceil,
                UnOp::Round => f64::round,
                other => unreachable!("{other:?} on float"),
            };
            Box::new(move |fr| Ok(f(a(fr)?)))
        }
        other => unreachable!("not a float expression: {other:?}"),
    }
}

pub(super) fn boolean(e: &Expr) -> Ev<bool> {
    common!(e, boolean, |b: i64| b != 0);
    match e {
        Expr::Bool(b) => {
            let b = *b;
            Box::new(move |_| Ok(b))
        }
        Expr::And(a, b) => {
            let (a, b) = (boolean(a), boolean(b));
            Box::new(move |fr| Ok(a(fr)? && b(fr)?))
        }
        Expr::Or(a, b) => {
            let (a, b) = (boolean(a), boolean(b));
            Box::new(move |fr| Ok(a(fr)? || b(fr)?))
        }
        Expr::Unary { op: UnOp::Not, arg } => {
            let a = boolean(arg);
            Box::new(move |fr| Ok(!a(fr)?))
        }
        Expr::Binary {
            op,
            operand: Ty::Int,
            lhs,
            rhs,
        } => shape::compare(*op, lhs, rhs),
        Expr::Binary {
            op,
            operand: Ty::Char,
            lhs,
            rhs,
        } => both(
            code(lhs),
            code(rhs),
            ordered(*op).expect("a char comparison"),
        ),
        Expr::Binary {
            op,
            operand: Ty::Float,
            lhs,
            rhs,
        } => {
            let f: fn(f64, f64) -> bool = match op {
                BinOp::Eq => ops::float_eq,
                BinOp::Ne => ops::float_ne,
                BinOp::Lt => ops::float_lt,
                BinOp::Le => ops::float_le,
                BinOp::Gt => ops::float_gt,
                BinOp::Ge => ops::float_ge,
                other => unreachable!("{other:?} does not give a bool"),
            };
            both(float(lhs), float(rhs), f)
        }
        Expr::Binary {
            op,
            operand: Ty::Bool,
            lhs,
            rhs,
        } => {
            let f = ordered(*op).unwrap_or_else(|| match op {
                BinOp::BitAnd => |x, y| x & y,
                BinOp::BitOr => |x, y| x | y,
                BinOp::BitXor => |x, y| x ^ y,
                other => unreachable!("{other:?} on bools"),
            });
            both(boolean(lhs), boolean(rhs), f)
        }
        other => unreachable!("not a bool expression: {other:?}"),
    }
}

/// A comparison operator on values whose order is Rust's (characters by code point, `false`
/// before `true`); `None` for other operators.
fn ordered<T: PartialOrd>(op: BinOp) -> Option<fn(T, T) -> bool> {
    Some(match op {
        BinOp::Eq => |x, y| x == y,
        BinOp::Ne => |x, y| x != y,
        BinOp::Lt => |x, y| x < y,
        BinOp::Le => |x, y| x <= y,
        BinOp::Gt => |x, y| x > y,
        BinOp::Ge => |x, y| x >= y,
        _ => return None,
    })
}

/// `f(a, b)`, `a` evaluated first.
fn both<T: 'static>(a: Ev<T>, b: Ev<T>, f: fn(T, T) -> bool) -> Ev<bool> {
    Box::new(move |fr| {
        let x = a(fr)?;
        Ok(f(x, b(fr)?))
    })
}

fn unit(e: &Expr) -> Ev<()> {
    common!(e, unit, |_: i64| ());
    match e {
        Expr::Unit => Box::new(|_| Ok(())),
        other => unreachable!("not a unit expression: {other:?}"),
    }
}

/// A call of specialization `callee`, recorded if the program is profiled.
pub(super) fn call(callee: usize, args: &[Expr]) -> Ev<i64> {
    let call = unrecorded_call(callee, args);
    let Some(frame) = RECORDED_FRAMES.with_borrow(|f| f.as_ref().map(|f| f[callee])) else {
        return call;
    };
    Box::new(move |fr| {
        if let Some(record) = &mut fr.record {
            record.enter(frame);
        }
        let result = call(fr);
        if let Some(record) = &mut fr.record {
            record.exit(true);
        }
        result
    })
}

/// A call of specialization `callee`: arguments go straight into the callee's frame.
fn unrecorded_call(callee: usize, args: &[Expr]) -> Ev<i64> {
    if let [arg] = args
        && arg.ty() == Ty::Int
    {
        return shape::leafy(arg, OneArgCall(callee));
    }
    let args: Vec<Arg> = args
        .iter()
        .map(|a| match a.ty().is_heap() {
            true => Arg::Heap(heap::dynamic(a)),
            false => Arg::Bits(bits(a)),
        })
        .collect();
    Box::new(move |fr| {
        enter(fr, callee, |fr, _| {
            // Each argument is pushed before the next is evaluated: a call inside one builds
            // its frame above the arguments already written. Heap arguments are the callee's
            // first heap slots, pushed the same way.
            for arg in &args {
                match arg {
                    Arg::Bits(arg) => {
                        let v = arg(fr)?;
                        fr.push_bits(v);
                    }
                    Arg::Heap(arg) => {
                        let v = arg(fr)?;
                        fr.push_heap(v);
                    }
                }
            }
            Ok(())
        })
    })
}

/// A call that unboxes its arrays of any values and runs the specialization for what they hold
/// (see [`Expr::CallUnboxing`]); the unboxed arrays are the callee's while it runs.
fn call_unboxing(callees: &[(Vec<Ty>, usize)], args: &[Expr]) -> Ev<i64> {
    let callees: Vec<(Vec<Ty>, usize, Option<u32>)> = callees
        .iter()
        .map(|(params, callee)| {
            let frame = RECORDED_FRAMES.with_borrow(|f| f.as_ref().map(|f| f[*callee]));
            (params.clone(), *callee, frame)
        })
        .collect();
    let types: Vec<Ty> = args.iter().map(Expr::ty).collect();
    let args: Vec<Unboxing> = args
        .iter()
        .map(|a| match a.ty() {
            Ty::Array => Unboxing::Array(heap::unboxed(a)),
            ty if ty.is_heap() => Unboxing::Heap(heap::dynamic(a)),
            _ => Unboxing::Bits(bits(a)),
        })
        .collect();
    let generic = callees
        .iter()
        .position(|(params, ..)| params.contains(&Ty::Array));
    Box::new(move |fr| {
        let mut values = Vec::with_capacity(args.len());
        for arg in &args {
            values.push(match arg {
                Unboxing::Bits(arg) => Passed::Bits(arg(fr)?),
                Unboxing::Heap(arg) => Passed::Heap(arg(fr)?),
                Unboxing::Array(arg) => arg(fr)?,
            });
        }
        let kinds: Vec<Ty> = values.iter().zip(&types).map(|(v, t)| v.kind(*t)).collect();
        let (params, callee, frame) = match callees.iter().find(|(params, ..)| *params == kinds) {
            Some(found) => found,
            None => &callees[generic.ok_or(Bail::Fallback)?],
        };
        if let (Some(frame), Some(record)) = (frame, &mut fr.record) {
            record.enter(*frame);
        }
        let arrays = fr.arrays.len();
        let result = enter(fr, *callee, |fr, _| {
            for (value, ty) in values.into_iter().zip(params) {
                match value {
                    Passed::Heap(v) => fr.push_heap(v),
                    Passed::Bits(bits) => fr.push_bits(bits),
                    Passed::Numbers(kind, numbers) if *ty == Ty::Array => {
                        fr.push_heap(boxed(kind, numbers))
                    }
                    Passed::Numbers(_, numbers) => {
                        fr.arrays.push(numbers);
                        fr.push_bits(fr.arrays.len() as i64 - 1);
                    }
                }
            }
            Ok(())
        });
        fr.arrays.truncate(arrays);
        if let (Some(_), Some(record)) = (frame, &mut fr.record) {
            record.exit(true);
        }
        result
    })
}

/// Unboxed numbers as Rhai's array again (the same values: ints, or floats from their bits).
fn boxed(kind: Ty, numbers: Vec<i64>) -> Dynamic {
    let item = |bits: i64| match kind {
        Ty::FloatArray => Dynamic::from(f64::from_bits(bits as u64)),
        _ => Dynamic::from(bits),
    };
    Dynamic::from_array(numbers.into_iter().map(item).collect())
}

/// An argument of [`call_unboxing`], as it is compiled.
enum Unboxing {
    Bits(Ev<i64>),
    Heap(Ev<Dynamic>),
    /// An array: its numbers, or itself when it holds other values.
    Array(Ev<Passed>),
}

/// An argument of [`call_unboxing`], evaluated.
pub(super) enum Passed {
    Bits(i64),
    Heap(Dynamic),
    /// An array's numbers and kind (`FloatArray` or `IntArray`).
    Numbers(Ty, Vec<i64>),
}

impl Passed {
    /// The parameter type this value takes: an unboxed array's kind, else `ty`, the type
    /// lowering gave the argument.
    fn kind(&self, ty: Ty) -> Ty {
        match self {
            Passed::Numbers(kind, _) => *kind,
            _ => ty,
        }
    }
}

/// An argument of a call: the bits of a scalar, or a heap value.
enum Arg {
    Bits(Ev<i64>),
    Heap(Ev<Dynamic>),
}

/// A call with one integer argument, shaped in place (`fib(n - 1)`).
struct OneArgCall(usize);

impl Sink<i64> for OneArgCall {
    type Out = Ev<i64>;
    fn take<V: Val<i64>>(self, arg: V) -> Ev<i64> {
        let callee = self.0;
        Box::new(move |fr| {
            enter(fr, callee, |fr, top| {
                let v = arg.eval(fr)?;
                fr.write(top, v);
                Ok(())
            })
        })
    }
}

/// Runs specialization `callee` in a new frame above the caller's, its arguments written by
/// `pass` at the new frame's base.
#[inline(always)]
fn enter(
    fr: &mut Frame<'_>,
    callee: usize,
    pass: impl FnOnce(&mut Frame<'_>, usize) -> R<()>,
) -> R<i64> {
    let program = fr.program;
    enter_running(fr, callee, pass, |fr| (program[callee].body)(fr), |_| ())
}

/// [`enter`], running `run` in the callee's frame (its body, or a part of it); `keep` runs when
/// it returns, while the callee's heap slots still hold its parameters (to take back a value
/// lent to it).
#[inline(always)]
fn enter_running<T>(
    fr: &mut Frame<'_>,
    callee: usize,
    pass: impl FnOnce(&mut Frame<'_>, usize) -> R<()>,
    run: impl FnOnce(&mut Frame<'_>) -> R<T>,
    keep: impl FnOnce(&mut Frame<'_>),
) -> R<T> {
    let f = &fr.program[callee];
    if fr.depth >= fr.limits.max_depth {
        return Err(Bail::Fallback); // Rhai's "Stack overflow", raised by the re-run
    }
    let (base, top, heap_top) = (fr.base, fr.top, fr.heap_top);
    let need = top + f.slots;
    if fr.stack.len() < need {
        fr.stack.resize(need * 2, 0);
        fr.enter_at(base); // the stack moved
    }
    if let Err(stopped) = pass(fr, top) {
        fr.top = top;
        fr.drop_heap_from(heap_top);
        return Err(stopped);
    }
    let heap = (f.heap_slots > 0).then(|| fr.enter_heap(heap_top, f.heap_slots));
    fr.enter_at(top);
    fr.top = need;
    fr.depth += 1;
    let result = fr.tick(f.entry_cost).and_then(|()| run(fr));
    fr.depth -= 1;
    fr.enter_at(base);
    fr.top = top;
    if let Some(saved) = heap {
        keep(fr);
        fr.leave_heap(saved);
    }
    result
}

impl Frame<'_> {
    /// Makes a callee's `count` heap slots start at `start` (its heap arguments are there
    /// already); answers the caller's heap base, for [`Frame::leave_heap`].
    #[cold]
    fn enter_heap(&mut self, start: usize, count: usize) -> usize {
        let saved = self.heap_base;
        self.heap_base = start;
        self.heap_top = start + count;
        if self.heap.len() < self.heap_top {
            self.heap.resize(self.heap_top, Dynamic::UNIT);
        }
        saved
    }

    /// Pushes a callee's scalar argument (its bits) after the slots in use.
    fn push_bits(&mut self, bits: i64) {
        self.write(self.top, bits);
        self.top += 1;
    }

    /// Pushes a callee's heap argument after the heap slots in use.
    fn push_heap(&mut self, value: Dynamic) {
        if self.heap.len() <= self.heap_top {
            self.heap.resize(self.heap_top + 1, Dynamic::UNIT);
        }
        self.heap[self.heap_top] = value;
        self.heap_top += 1;
    }

    /// Frees the heap values pushed from `start` on (a call's arguments, when one stopped).
    #[cold]
    fn drop_heap_from(&mut self, start: usize) {
        if self.heap_top > start {
            free(&mut self.heap[start..self.heap_top]);
            self.heap_top = start;
        }
    }

    /// Empties the callee's heap slots (what they held is freed now) and returns to the caller's.
    fn leave_heap(&mut self, saved: usize) {
        free(&mut self.heap[self.heap_base..self.heap_top]);
        self.heap_top = self.heap_base;
        self.heap_base = saved;
    }
}

/// Leaves `()` in `slots`, freeing what they held (no drop call for a scalar or a `()`, which own
/// nothing: most slots of a finished call).
fn free(slots: &mut [Dynamic]) {
    for slot in slots {
        native::discard(std::mem::take(slot));
    }
}

/// `if` as a value.
struct IfValue<T> {
    then: Ev<T>,
    other: Ev<T>,
}

impl<T: 'static> TestSink for IfValue<T> {
    type Out = Ev<T>;
    fn take<C: Test>(self, cond: C) -> Ev<T> {
        let IfValue { then, other } = self;
        Box::new(move |fr| if cond.test(fr)? { then(fr) } else { other(fr) })
    }
}

/// `if` as a statement; `None` is a branch that does nothing.
struct IfStatement {
    then: Option<St>,
    other: Option<St>,
}

impl TestSink for IfStatement {
    type Out = St;
    fn take<C: Test>(self, cond: C) -> St {
        let IfStatement { then, other } = self;
        Box::new(move |fr| {
            let branch = match cond.test(fr) {
                Ok(true) => &then,
                Ok(false) => &other,
                Err(e) => return fr.stopped(e),
            };
            branch.as_ref().map_or(Flow::Next, |branch| branch(fr))
        })
    }
}

/// `while` and `loop`; `cost` is charged per iteration.
struct WhileLoop {
    body: Vec<St>,
    cost: u64,
}

impl TestSink for WhileLoop {
    type Out = St;
    fn take<C: Test>(self, cond: C) -> St {
        let WhileLoop { body, cost } = self;
        Box::new(move |fr| {
            loop {
                if let Some(flow) = charged(fr, cost) {
                    return flow;
                }
                match cond.test(fr) {
                    Ok(true) => {}
                    Ok(false) => return Flow::Next,
                    Err(e) => return fr.stopped(e),
                }
                if let Some(flow) = after_body(run(&body, fr)) {
                    return flow;
                }
            }
        })
    }
}

/// A copied body (see `inline.rs`): the call's depth check and charge, its arguments stored
/// in the copy's parameter slots, then its value one level deeper.
fn inlined<T: 'static>(params: &[(usize, Expr)], body: Ev<T>, entry_cost: u64) -> Ev<T> {
    if let [(slot, arg)] = params
        && arg.ty() == Ty::Int
    {
        let slot = *slot;
        return shape::leafy(
            arg,
            InlinedOne {
                slot,
                body,
                entry_cost,
            },
        );
    }
    let params: Vec<(usize, Ev<i64>)> = params.iter().map(|(s, a)| (*s, bits(a))).collect();
    Box::new(move |fr| {
        if fr.depth >= fr.limits.max_depth {
            return Err(Bail::Fallback);
        }
        for (slot, arg) in &params {
            let v = arg(fr)?;
            fr.set(*slot, v);
        }
        deeper(fr, entry_cost, &body)
    })
}

/// A copied body with one integer parameter, its argument shaped in place.
struct InlinedOne<T> {
    slot: usize,
    body: Ev<T>,
    entry_cost: u64,
}

impl<T: 'static> Sink<i64> for InlinedOne<T> {
    type Out = Ev<T>;
    fn take<V: Val<i64>>(self, arg: V) -> Ev<T> {
        let InlinedOne {
            slot,
            body,
            entry_cost,
        } = self;
        Box::new(move |fr| {
            if fr.depth >= fr.limits.max_depth {
                return Err(Bail::Fallback);
            }
            let v = arg.eval(fr)?;
            fr.set(slot, v);
            deeper(fr, entry_cost, &body)
        })
    }
}

/// Runs `body` one call level deeper, charged as a call.
#[inline(always)]
fn deeper<T>(fr: &mut Frame<'_>, entry_cost: u64, body: &Ev<T>) -> R<T> {
    fr.depth += 1;
    let value = fr.tick(entry_cost).and_then(|()| body(fr));
    fr.depth -= 1;
    value
}

/// An element of the array parameter in a slot, as its bits, at an index shaped in place.
struct ElementOf(usize);

impl Sink<i64> for ElementOf {
    type Out = Ev<i64>;
    fn take<V: Val<i64>>(self, index: V) -> Ev<i64> {
        let array = self.0;
        Box::new(move |fr| {
            let i = index.eval(fr)?;
            fr.element(array, i)
        })
    }
}

/// An int value made a float, as its own closure.
struct IntAsFloat;

impl Sink<i64> for IntAsFloat {
    type Out = Ev<f64>;
    fn take<V: Val<i64>>(self, v: V) -> Ev<f64> {
        Box::new(move |fr| Ok(v.eval(fr)? as f64))
    }
}

/// A value as its own closure.
struct Boxed;

impl<T: 'static> Sink<T> for Boxed {
    type Out = Ev<T>;
    fn take<V: Val<T>>(self, v: V) -> Ev<T> {
        Box::new(move |fr| v.eval(fr))
    }
}

/// What a slot holds of a value: an int itself, a float its bits.
trait Bits: Copy + 'static {
    fn bits(self) -> i64;
}

impl Bits for i64 {
    fn bits(self) -> i64 {
        self
    }
}

impl Bits for f64 {
    fn bits(self) -> i64 {
        self.to_bits() as i64
    }
}

/// `slot = value`.
struct StoreTo(usize);

impl<T: Bits> Sink<T> for StoreTo {
    type Out = St;
    fn take<V: Val<T>>(self, v: V) -> St {
        let slot = self.0;
        Box::new(move |fr| match v.eval(fr) {
            Ok(v) => {
                fr.set(slot, v.bits());
                Flow::Next
            }
            Err(e) => fr.stopped(e),
        })
    }
}

/// A character's code point.
fn code(e: &Expr) -> Ev<i64> {
    if let Some(code) = heap::char_code(e) {
        return code;
    }
    common!(e, code, |b: i64| b);
    unreachable!("not a char expression: {e:?}")
}
