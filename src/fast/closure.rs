//! The first back end: the typed form compiled to nested closures over a frame of unboxed 64-bit
//! slots (floats as their bits, bools as 0/1). Pure safe Rust; compiles in microseconds.

use rhai::EvalAltResult;

use super::{
    ir::{BinOp, Block, Expr, Function, Stmt, Ty, UnOp},
    ops,
};
use crate::stop::{StopCheck, terminate};

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

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Next,
    Break,
    Continue,
    Return,
}

type R<T> = Result<T, Bail>;
type Ev<T> = Box<dyn Fn(&mut Frame<'_>) -> R<T> + Send + Sync>;
type St = Box<dyn Fn(&mut Frame<'_>) -> R<Flow> + Send + Sync>;

thread_local! {
    /// The slot stack, kept between calls so a call allocates nothing.
    static STACK: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Operations between two looks at the stop request.
const STOP_CHECK_EVERY: u64 = 1024;

/// What bounds a compiled run: the engine's limits and the runtime's stop request.
pub(crate) struct Limits {
    pub(crate) max_operations: u64,
    pub(crate) max_depth: usize,
    pub(crate) stop: Option<StopCheck>,
}

/// Compiled recursion deeper than this goes back to Rhai, whatever the engine allows: compiled
/// calls nest native stack frames.
const NATIVE_DEPTH_CAP: usize = 1000;

impl Limits {
    /// `engine`'s operation and call-depth limits for an entry call that is itself at call level
    /// `level` (1 for a call from the top level), and `stop` checked every 1,024 operations.
    pub(crate) fn of(engine: &rhai::Engine, stop: Option<StopCheck>, level: usize) -> Limits {
        Limits {
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
    top: usize,
    ret: i64,
    depth: usize,
    ops: u64,
    next_check: u64,
    limits: &'p Limits,
}

impl Frame<'_> {
    #[inline]
    fn slot(&self, slot: usize) -> i64 {
        self.stack[self.base + slot]
    }

    #[inline]
    fn set(&mut self, slot: usize, bits: i64) {
        let at = self.base + slot;
        self.stack[at] = bits;
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
        if let Some(stop) = &limits.stop {
            if let Some(reason) = stop() {
                return Err(Bail::Stop(terminate(reason)));
            }
        }
        self.next_check = next_check(self.ops, limits);
        Ok(())
    }
}

fn next_check(ops: u64, limits: &Limits) -> u64 {
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
    slots: usize,
    entry_cost: u64,
    /// Runs the body; answers the return value's bits.
    body: Ev<i64>,
}

/// A compiled entry specialization and everything it calls.
pub(crate) struct Program {
    fns: Vec<FnCode>,
    entry: usize,
    params: Vec<Ty>,
    ret: Ty,
}

/// A value crossing into or out of compiled code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Unit,
}

impl Scalar {
    fn bits(self) -> i64 {
        match self {
            Scalar::Int(i) => i,
            Scalar::Float(f) => f.to_bits() as i64,
            Scalar::Bool(b) => b as i64,
            Scalar::Unit => 0,
        }
    }

    fn from_bits(ty: Ty, bits: i64) -> Scalar {
        match ty {
            Ty::Int => Scalar::Int(bits),
            Ty::Float => Scalar::Float(f64::from_bits(bits as u64)),
            Ty::Bool => Scalar::Bool(bits != 0),
            Ty::Unit => Scalar::Unit,
        }
    }
}

impl Program {
    pub(crate) fn new(functions: &[Function], entry: usize) -> Program {
        let fns = functions
            .iter()
            .map(|f| FnCode {
                slots: f.slots,
                entry_cost: f.entry_cost,
                body: function_body(f),
            })
            .collect();
        Program {
            fns,
            entry,
            params: functions[entry].params.clone(),
            ret: functions[entry].ret,
        }
    }

    /// Runs the entry function on `args` (whose types match its parameters).
    pub(crate) fn call(&self, args: &[Scalar], limits: &Limits) -> R<Scalar> {
        debug_assert_eq!(args.len(), self.params.len());
        let entry = &self.fns[self.entry];
        let mut stack = STACK.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let need = entry.slots.max(args.len()) + 64;
        if stack.len() < need {
            stack.resize(need, 0);
        }
        let mut frame = Frame {
            program: &self.fns,
            stack,
            base: 0,
            top: entry.slots,
            ret: 0,
            depth: 1,
            ops: 0,
            next_check: next_check(0, limits),
            limits,
        };
        for (i, a) in args.iter().enumerate() {
            frame.stack[i] = a.bits();
        }
        let bits = frame
            .tick(entry.entry_cost)
            .and_then(|()| (entry.body)(&mut frame));
        let bits = returned(bits, &frame);
        STACK.with(|s| *s.borrow_mut() = frame.stack);
        Ok(Scalar::from_bits(self.ret, bits?))
    }
}

/// A function's body; a `return` from inside an expression is caught by [`returned`].
fn function_body(f: &Function) -> Ev<i64> {
    let value = bits(&f.body.value);
    if f.body.stmts.is_empty() {
        return value;
    }
    let stmts = statements(&f.body.stmts);
    Box::new(move |fr| {
        for s in &stmts {
            match s(fr)? {
                Flow::Next => {}
                Flow::Return => return Ok(fr.ret),
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
fn run(stmts: &[St], fr: &mut Frame<'_>) -> R<Flow> {
    for s in stmts {
        let flow = s(fr)?;
        if flow != Flow::Next {
            return Ok(flow);
        }
    }
    Ok(Flow::Next)
}

/// A statement's expression: an escape from inside it becomes the statement's flow.
fn escaping(e: R<()>) -> R<Flow> {
    match e {
        Ok(()) => Ok(Flow::Next),
        Err(Bail::Escape(flow)) => Ok(flow),
        Err(other) => Err(other),
    }
}

fn statement(stmt: &Stmt) -> St {
    match stmt {
        Stmt::Store(slot, e) if e.ty() == Ty::Int && Simple::of(e).is_some() => {
            let (slot, simple) = (*slot, Simple::of(e).expect("checked"));
            Box::new(move |fr| {
                let v = simple.eval(fr)?;
                fr.set(slot, v);
                Ok(Flow::Next)
            })
        }
        Stmt::Store(slot, e) => {
            let (slot, value) = (*slot, bits(e));
            Box::new(move |fr| {
                let v = match value(fr) {
                    Ok(v) => v,
                    Err(Bail::Escape(flow)) => return Ok(flow),
                    Err(e) => return Err(e),
                };
                fr.set(slot, v);
                Ok(Flow::Next)
            })
        }
        // An `if` or a block in statement position: its control flow is the statement's.
        Stmt::Eval(Expr::If { cond, then, other }) => {
            let cond = Cond::of(cond);
            let then = block_statements(then);
            let other = block_statements(other);
            Box::new(move |fr| {
                let c = match cond.test(fr) {
                    Ok(c) => c,
                    Err(Bail::Escape(flow)) => return Ok(flow),
                    Err(e) => return Err(e),
                };
                run(if c { &then } else { &other }, fr)
            })
        }
        Stmt::Eval(Expr::Block(block)) => {
            let stmts = block_statements(block);
            Box::new(move |fr| run(&stmts, fr))
        }
        Stmt::Eval(e) => {
            let e = bits(e);
            Box::new(move |fr| escaping(e(fr).map(|_| ())))
        }
        Stmt::While { cond, body, cost } => {
            let cond = cond.as_ref().map(Cond::of);
            let body = block_statements(body);
            let cost = *cost;
            Box::new(move |fr| {
                loop {
                    fr.tick(cost)?;
                    if let Some(cond) = &cond {
                        match cond.test(fr) {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(Bail::Escape(flow)) => return Ok(flow),
                            Err(e) => return Err(e),
                        }
                    }
                    match run(&body, fr)? {
                        Flow::Next | Flow::Continue => {}
                        Flow::Break => break,
                        Flow::Return => return Ok(Flow::Return),
                    }
                }
                Ok(Flow::Next)
            })
        }
        Stmt::Do {
            body,
            cond,
            until,
            cost,
        } => {
            let cond = Cond::of(cond);
            let body = block_statements(body);
            let (until, cost) = (*until, *cost);
            Box::new(move |fr| {
                loop {
                    fr.tick(cost)?;
                    match run(&body, fr)? {
                        Flow::Next | Flow::Continue => {}
                        Flow::Break => break,
                        Flow::Return => return Ok(Flow::Return),
                    }
                    let c = match cond.test(fr) {
                        Ok(c) => c,
                        Err(Bail::Escape(flow)) => return Ok(flow),
                        Err(e) => return Err(e),
                    };
                    if c == until {
                        break;
                    }
                }
                Ok(Flow::Next)
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
                let start = from(fr)?;
                let end = to(fr)?;
                let mut i = start;
                let mut n = 0;
                // `a..=i64::MAX` must not overflow the counter.
                while if inclusive { i <= end } else { i < end } {
                    fr.tick(cost)?;
                    fr.set(var, i);
                    if let Some(c) = counter {
                        fr.set(c, n);
                    }
                    match run(&body, fr)? {
                        Flow::Next | Flow::Continue => {}
                        Flow::Break => break,
                        Flow::Return => return Ok(Flow::Return),
                    }
                    if i == end {
                        break;
                    }
                    i += 1;
                    n += 1;
                }
                Ok(Flow::Next)
            })
        }
        Stmt::Break => Box::new(|_| Ok(Flow::Break)),
        Stmt::Continue => Box::new(|_| Ok(Flow::Continue)),
        Stmt::Return(e) => {
            let e = bits(e);
            Box::new(move |fr| match e(fr) {
                Ok(v) => {
                    fr.ret = v;
                    Ok(Flow::Return)
                }
                Err(Bail::Escape(flow)) => Ok(flow),
                Err(e) => Err(e),
            })
        }
    }
}

/// A block in statement position: its statements, then its value (evaluated for its errors).
fn block_statements(block: &Block) -> Vec<St> {
    let mut stmts = statements(&block.stmts);
    if !matches!(block.value, Expr::Unit) {
        stmts.push(statement(&Stmt::Eval(block.value.clone())));
    }
    stmts
}

/// A block used as a value; control flow leaving it escapes as [`Bail::Escape`].
fn block_value<T: 'static>(block: &Block, value: Ev<T>) -> Ev<T> {
    if block.stmts.is_empty() {
        return value;
    }
    let stmts = statements(&block.stmts);
    Box::new(move |fr| match run(&stmts, fr)? {
        Flow::Next => value(fr),
        flow => Err(Bail::Escape(flow)),
    })
}

/// Any expression, as the bits of its value.
fn bits(e: &Expr) -> Ev<i64> {
    match e.ty() {
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
    }
}

/// The forms every type shares: slots, `if`, blocks and calls.
macro_rules! common {
    ($e:expr, $this:ident, $from_bits:expr) => {
        match $e {
            Expr::Load(slot, _) => {
                let slot = *slot;
                return Box::new(move |fr| Ok($from_bits(fr.slot(slot))));
            }
            Expr::If { cond, then, other } => {
                let cond = Cond::of(cond);
                let then = block_value(then, $this(&then.value));
                let other = block_value(other, $this(&other.value));
                return Box::new(move |fr| if cond.test(fr)? { then(fr) } else { other(fr) });
            }
            Expr::Block(block) => return block_value(block, $this(&block.value)),
            Expr::Call { callee, args, .. } => {
                let call = call(*callee, args);
                return Box::new(move |fr| call(fr).map($from_bits));
            }
            _ => {}
        }
    };
}

fn int(e: &Expr) -> Ev<i64> {
    if let Some(simple) = Simple::of(e) {
        return Box::new(move |fr| simple.eval(fr));
    }
    if let Expr::Call { callee, args, .. } = e {
        return call(*callee, args); // already the value's bits: no wrapper
    }
    common!(e, int, |b: i64| b);
    match e {
        Expr::Int(i) => {
            let i = *i;
            Box::new(move |_| Ok(i))
        }
        Expr::Binary { op, lhs, rhs, .. } => int_binary(*op, lhs, rhs),
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

/// An integer operand read in place: a slot or a constant.
#[derive(Clone, Copy)]
enum Leaf {
    Slot(usize),
    Const(i64),
}

impl Leaf {
    fn of(e: &Expr) -> Option<Leaf> {
        match e {
            Expr::Load(slot, Ty::Int) => Some(Leaf::Slot(*slot)),
            Expr::Int(k) => Some(Leaf::Const(*k)),
            _ => None,
        }
    }

    #[inline(always)]
    fn get(self, fr: &Frame<'_>) -> i64 {
        match self {
            Leaf::Slot(slot) => fr.slot(slot),
            Leaf::Const(k) => k,
        }
    }
}

/// Arithmetic evaluated in place, without a closure call per operator: the shapes of hot loops
/// (`i * i`, `n % i`, `3 * n + 1`). At most [`SIMPLE_NODES`] operators.
#[derive(Clone)]
enum Simple {
    Leaf(Leaf),
    Bin(BinOp, Leaf, Leaf),
    /// Division and remainder by a power of two, 2^shift: shifts and masks (they cannot fail).
    DivPow2(Leaf, u32),
    RemPow2(Leaf, u32),
    Tree(BinOp, Box<Simple>, Box<Simple>),
}

const SIMPLE_NODES: usize = 4;

impl Simple {
    fn of(e: &Expr) -> Option<Simple> {
        Self::shaped(e, &mut 0)
    }

    fn shaped(e: &Expr, nodes: &mut usize) -> Option<Simple> {
        if let Some(leaf) = Leaf::of(e) {
            return Some(Simple::Leaf(leaf));
        }
        let Expr::Binary {
            op,
            operand: Ty::Int,
            lhs,
            rhs,
        } = e
        else {
            return None;
        };
        *nodes += 1;
        if op.is_comparison() || *nodes > SIMPLE_NODES {
            return None;
        }
        if let (Some(x), Expr::Int(k)) = (Leaf::of(lhs), &**rhs) {
            if *k > 1 && k.count_ones() == 1 {
                match op {
                    BinOp::Div => return Some(Simple::DivPow2(x, k.trailing_zeros())),
                    BinOp::Rem => return Some(Simple::RemPow2(x, k.trailing_zeros())),
                    _ => {}
                }
            }
        }
        match (Leaf::of(lhs), Leaf::of(rhs)) {
            (Some(a), Some(b)) => Some(Simple::Bin(*op, a, b)),
            _ => Some(Simple::Tree(
                *op,
                Box::new(Self::shaped(lhs, nodes)?),
                Box::new(Self::shaped(rhs, nodes)?),
            )),
        }
    }

    #[inline(always)]
    fn eval(&self, fr: &Frame<'_>) -> R<i64> {
        match self {
            Simple::Leaf(leaf) => Ok(leaf.get(fr)),
            Simple::Bin(op, a, b) => int_op(*op, a.get(fr), b.get(fr)),
            Simple::DivPow2(x, shift) => Ok(div_pow2(x.get(fr), *shift)),
            Simple::RemPow2(x, shift) => {
                let x = x.get(fr);
                Ok(x - (div_pow2(x, *shift) << shift))
            }
            Simple::Tree(op, a, b) => eval_tree(*op, a, b, fr),
        }
    }
}

/// The recursive case of [`Simple::eval`], apart so that the common cases inline.
#[inline(never)]
fn eval_tree(op: BinOp, a: &Simple, b: &Simple, fr: &Frame<'_>) -> R<i64> {
    let x = a.eval(fr)?;
    int_op(op, x, b.eval(fr)?)
}

/// `x / 2^shift` rounded towards zero, as Rhai's (and Rust's) integer division.
#[inline(always)]
fn div_pow2(x: i64, shift: u32) -> i64 {
    let bias = ((x >> 63) as u64 >> (64 - shift)) as i64;
    (x + bias) >> shift
}

/// A condition, with integer comparisons of simple operands tested in place.
enum Cond {
    IntCmp(BinOp, Simple, Simple),
    Code(Ev<bool>),
}

impl Cond {
    fn of(e: &Expr) -> Cond {
        if let Expr::Binary {
            op,
            operand: Ty::Int,
            lhs,
            rhs,
        } = e
        {
            if let (Some(a), Some(b)) = (Simple::of(lhs), Simple::of(rhs)) {
                return Cond::IntCmp(*op, a, b);
            }
        }
        Cond::Code(boolean(e))
    }

    #[inline(always)]
    fn test(&self, fr: &mut Frame<'_>) -> R<bool> {
        match self {
            Cond::IntCmp(op, a, b) => {
                let x = a.eval(fr)?;
                Ok(int_cmp(*op, x, b.eval(fr)?))
            }
            Cond::Code(code) => code(fr),
        }
    }
}

/// Rhai's integer operators.
#[inline(always)]
fn int_op(op: BinOp, x: i64, y: i64) -> R<i64> {
    let value = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div => ops::int_div(x, y),
        BinOp::Rem => x.checked_rem(y),
        BinOp::Pow => ops::int_pow(x, y),
        BinOp::Shl => Some(ops::shift_left(x, y)),
        BinOp::Shr => Some(ops::shift_right(x, y)),
        BinOp::BitAnd => Some(x & y),
        BinOp::BitOr => Some(x | y),
        BinOp::BitXor => Some(x ^ y),
        cmp => unreachable!("{cmp:?} does not give an int"),
    };
    value.ok_or(Bail::Fallback)
}

#[inline(always)]
fn int_cmp(op: BinOp, x: i64, y: i64) -> bool {
    match op {
        BinOp::Eq => x == y,
        BinOp::Ne => x != y,
        BinOp::Lt => x < y,
        BinOp::Le => x <= y,
        BinOp::Gt => x > y,
        BinOp::Ge => x >= y,
        other => unreachable!("{other:?} does not give a bool"),
    }
}

fn int_binary(op: BinOp, lhs: &Expr, rhs: &Expr) -> Ev<i64> {
    let (a, b) = (int(lhs), int(rhs));
    Box::new(move |fr| {
        let x = a(fr)?;
        int_op(op, x, b(fr)?)
    })
}

fn float(e: &Expr) -> Ev<f64> {
    common!(e, float, |b: i64| f64::from_bits(b as u64));
    match e {
        Expr::Float(x) => {
            let x = *x;
            Box::new(move |_| Ok(x))
        }
        Expr::Binary { op, lhs, rhs, .. } => {
            let (a, b) = (float(lhs), float(rhs));
            macro_rules! arith {
                ($f:expr) => {{
                    let f = $f;
                    Box::new(move |fr: &mut Frame<'_>| {
                        let x = a(fr)?;
                        Ok(f(x, b(fr)?))
                    })
                }};
            }
            match op {
                BinOp::Add => arith!(|x: f64, y: f64| x + y),
                BinOp::Sub => arith!(|x: f64, y: f64| x - y),
                BinOp::Mul => arith!(|x: f64, y: f64| x * y),
                BinOp::Div => arith!(|x: f64, y: f64| x / y),
                BinOp::Rem => arith!(|x: f64, y: f64| x % y),
                BinOp::Pow => arith!(|x: f64, y: f64| x.powf(y)),
                other => unreachable!("{other:?} does not give a float"),
            }
        }
        Expr::Unary { op, arg } => {
            if *op == UnOp::ToFloat {
                let i = int(arg);
                return Box::new(move |fr| Ok(i(fr)? as f64));
            }
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

fn boolean(e: &Expr) -> Ev<bool> {
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
        } => int_compare(*op, lhs, rhs),
        Expr::Binary {
            op,
            operand: Ty::Float,
            lhs,
            rhs,
        } => {
            let (a, b) = (float(lhs), float(rhs));
            let f: fn(f64, f64) -> bool = match op {
                BinOp::Eq => ops::float_eq,
                BinOp::Ne => ops::float_ne,
                BinOp::Lt => ops::float_lt,
                BinOp::Le => ops::float_le,
                BinOp::Gt => ops::float_gt,
                BinOp::Ge => ops::float_ge,
                other => unreachable!("{other:?} does not give a bool"),
            };
            Box::new(move |fr| {
                let x = a(fr)?;
                Ok(f(x, b(fr)?))
            })
        }
        Expr::Binary {
            op,
            operand: Ty::Bool,
            lhs,
            rhs,
        } => {
            let (a, b) = (boolean(lhs), boolean(rhs));
            let f: fn(bool, bool) -> bool = match op {
                BinOp::Eq => |x, y| x == y,
                BinOp::Ne => |x, y| x != y,
                BinOp::Lt => |x, y| !x & y,
                BinOp::Le => |x, y| x <= y,
                BinOp::Gt => |x, y| x & !y,
                BinOp::Ge => |x, y| x >= y,
                BinOp::BitAnd => |x, y| x & y,
                BinOp::BitOr => |x, y| x | y,
                BinOp::BitXor => |x, y| x ^ y,
                other => unreachable!("{other:?} on bools"),
            };
            Box::new(move |fr| {
                let x = a(fr)?;
                Ok(f(x, b(fr)?))
            })
        }
        other => unreachable!("not a bool expression: {other:?}"),
    }
}

/// Integer comparisons; two simple operands make one closure (`i * i <= n`, `n % i == 0`).
fn int_compare(op: BinOp, lhs: &Expr, rhs: &Expr) -> Ev<bool> {
    if let (Some(a), Some(b)) = (Simple::of(lhs), Simple::of(rhs)) {
        return Box::new(move |fr| {
            let x = a.eval(fr)?;
            Ok(int_cmp(op, x, b.eval(fr)?))
        });
    }
    let (a, b) = (int(lhs), int(rhs));
    Box::new(move |fr| {
        let x = a(fr)?;
        Ok(int_cmp(op, x, b(fr)?))
    })
}

fn unit(e: &Expr) -> Ev<()> {
    common!(e, unit, |_: i64| ());
    match e {
        Expr::Unit => Box::new(|_| Ok(())),
        other => unreachable!("not a unit expression: {other:?}"),
    }
}

/// A call's argument: simple arithmetic in place, anything else through its closure.
enum Arg {
    Simple(Simple),
    Code(Ev<i64>),
}

/// A call of specialization `callee`: arguments go straight into the callee's frame.
fn call(callee: usize, args: &[Expr]) -> Ev<i64> {
    let args: Vec<Arg> = args
        .iter()
        .map(|a| match Simple::of(a) {
            Some(simple) => Arg::Simple(simple),
            None => Arg::Code(bits(a)),
        })
        .collect();
    Box::new(move |fr| {
        let program = fr.program;
        let f = &program[callee];
        if fr.depth >= fr.limits.max_depth {
            return Err(Bail::Fallback); // Rhai's "Stack overflow", raised by the re-run
        }
        let (base, top) = (fr.base, fr.top);
        let need = top + f.slots.max(args.len());
        if fr.stack.len() < need {
            fr.stack.resize(need * 2, 0);
        }
        for a in &args {
            let v = match a {
                Arg::Simple(simple) => simple.eval(fr)?,
                Arg::Code(code) => code(fr)?,
            };
            fr.stack[fr.top] = v;
            fr.top += 1;
        }
        fr.base = top;
        fr.top = top + f.slots.max(args.len());
        fr.depth += 1;
        let result = fr.tick(f.entry_cost).and_then(|()| (f.body)(fr));
        let result = returned(result, fr);
        fr.depth -= 1;
        fr.base = base;
        fr.top = top;
        result
    })
}
