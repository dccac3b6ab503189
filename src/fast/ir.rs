//! The typed intermediate form: what a back end compiles. Every value has one static type, every
//! operator has operands of one type (promotions are explicit), and control flow is structured.
//! A second back end (Cranelift) would read this and nothing else.

pub(crate) use super::native::{DirectCall, Native, SwitchKey};

/// The types the tier compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ty {
    Int,
    Float,
    Bool,
    Unit,
    /// An array of ints or of floats: only a parameter, only read by index and `len`, or written
    /// by index with its element type (an array argument is the callee's own copy in Rhai).
    IntArray,
    FloatArray,
    /// A character: its code point in a slot.
    Char,
    /// Values kept as Rhai's own `Dynamic`, in the frame's heap slots: a string, an array of
    /// any values, an object map, or a value whose type is known only when it runs (`Dyn`: an
    /// array's element, a map's value). Operations on them check the type they need when they
    /// run; any other type sends the call back to Rhai.
    Str,
    Array,
    Map,
    Dyn,
}

impl Ty {
    /// An array's element type.
    pub(crate) fn elem(self) -> Option<Ty> {
        match self {
            Ty::IntArray => Some(Ty::Int),
            Ty::FloatArray => Some(Ty::Float),
            _ => None,
        }
    }

    /// An array of numbers made an array of any values; any other type is left as it is.
    pub(crate) fn rebox(&mut self) {
        if self.elem().is_some() {
            *self = Ty::Array;
        }
    }

    /// Whether values of this type live in heap slots (as `Dynamic`).
    pub(crate) fn is_heap(self) -> bool {
        matches!(self, Ty::Str | Ty::Array | Ty::Map | Ty::Dyn)
    }
}

/// A local variable's place in its function's frame.
pub(crate) type Slot = usize;

/// One specialization: a script function compiled for one list of argument types.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    /// The script function's name (for the profiler).
    pub(crate) name: String,
    /// Parameters occupy slots `0..params.len()`.
    pub(crate) params: Vec<Ty>,
    pub(crate) ret: Ty,
    pub(crate) slots: usize,
    /// Heap slots (see [`Ty::is_heap`]), numbered apart from the others.
    pub(crate) heap_slots: usize,
    pub(crate) body: Block,
    /// Operations charged per call, for the operation limit (the body outside its loops).
    pub(crate) entry_cost: u64,
}

impl Function {
    /// How the body uses its first `count` parameters (see [`ParamUses`]).
    pub(crate) fn param_uses(&self, count: usize) -> ParamUses {
        let first = &self.params[..count.min(self.params.len())];
        let heap = first.iter().filter(|t| t.is_heap()).count();
        let mut uses = ParamUses {
            heap_changed: vec![false; heap],
            scalar_stored: vec![false; first.len() - heap],
            loads: 0,
            reads: 0,
        };
        self.body.clone().visit_mut(&mut uses);
        uses
    }
}

/// A comparer `|a, b| op(left, right)` whose operands each read one parameter, a different one
/// (`b.score - a.score`): each operand can be computed once per element instead of once per
/// comparison.
pub(crate) struct KeyedComparer<'f> {
    pub(crate) op: BinOp,
    /// The operand that reads the first parameter, then the one that reads the second.
    pub(crate) keys: [&'f Expr; 2],
    /// Whether `left` is the operand that reads the second parameter.
    pub(crate) swapped: bool,
    /// Whether both operands are the same expression of their parameter (`b.score - a.score`):
    /// one key per element then serves both.
    pub(crate) same: bool,
}

impl Function {
    /// This function as a [`KeyedComparer`], if it is one.
    pub(crate) fn keyed_comparer(&self) -> Option<KeyedComparer<'_>> {
        let (Ty::Dyn, Ty::Dyn) = (self.params.first()?, self.params.get(1)?) else {
            return None;
        };
        let Expr::Mixed { op, lhs, rhs, .. } = &self.body.value else {
            return None;
        };
        if self.params.len() != 2 || !self.body.stmts.is_empty() {
            return None;
        }
        let (keys, swapped) = match (only_param_read(lhs)?, only_param_read(rhs)?) {
            (0, 1) => ([&**lhs, &**rhs], false),
            (1, 0) => ([&**rhs, &**lhs], true),
            _ => return None,
        };
        Some(KeyedComparer {
            op: *op,
            keys,
            swapped,
            same: format!("{:?}", keys[0]) == format!("{:?}", on_first_param(keys[1])),
        })
    }
}

/// `e`, an operand that reads the second parameter, reading the first instead.
fn on_first_param(e: &Expr) -> Expr {
    struct Rename;
    impl VisitMut for Rename {
        fn expr(&mut self, e: &mut Expr) {
            if let Expr::Load(slot @ 1, ty) = e
                && ty.is_heap()
            {
                *slot = 0;
            }
        }
    }
    let mut e = e.clone();
    e.visit_mut(&mut Rename);
    e
}

/// The one heap parameter (of two) that `e` reads, if it reads exactly one.
fn only_param_read(e: &Expr) -> Option<Slot> {
    struct Reads(Vec<Slot>);
    impl VisitMut for Reads {
        fn expr(&mut self, e: &mut Expr) {
            if let Expr::Load(slot, ty) = e
                && ty.is_heap()
                && *slot < 2
                && !self.0.contains(slot)
            {
                self.0.push(*slot);
            }
        }
    }
    let mut reads = Reads(Vec::new());
    e.clone().visit_mut(&mut reads);
    match reads.0[..] {
        [param] => Some(param),
        _ => None,
    }
}

/// How a body uses some of its parameters (the heap slots below `heap`, the scalar slots below
/// `scalars`): whether it changes a heap one or assigns a scalar one, how often it loads a heap
/// one, and how many of those loads only read from it (a native's receiver that does not change
/// it, a guarded scalar, an operand of an operator other than `+`).
pub(crate) struct ParamUses {
    /// By heap slot: whether the body changes that heap parameter.
    heap_changed: Vec<bool>,
    /// By slot: whether the body assigns that scalar parameter.
    scalar_stored: Vec<bool>,
    loads: usize,
    reads: usize,
}

impl ParamUses {
    /// Whether the body never changes a heap parameter: a caller may then lend it a value and
    /// take the value back after the call, instead of giving it a copy.
    pub(crate) fn keeps_heap(&self) -> bool {
        !self.heap_changed.contains(&true)
    }

    /// Whether the body only reads from its heap parameters, so that nothing of theirs but a
    /// copied part leaves the call: they may then be handles shared with the caller's values.
    pub(crate) fn only_reads_heap(&self) -> bool {
        self.keeps_heap() && self.loads == self.reads
    }

    /// Whether the body assigns to any of these parameters.
    pub(crate) fn changes_any(&self) -> bool {
        !self.keeps_heap() || self.scalar_stored.contains(&true)
    }

    /// For each of `params` (these parameters' types, in order), whether the body changes it.
    pub(crate) fn changed(&self, params: &[Ty]) -> Vec<bool> {
        let (mut heap, mut scalars) = (self.heap_changed.iter(), self.scalar_stored.iter());
        let mut next = |ty: &Ty| match ty.is_heap() {
            true => heap.next(),
            false => scalars.next(),
        };
        params.iter().map(|t| next(t).is_some_and(|c| *c)).collect()
    }

    fn is_param(&self, e: &Expr) -> bool {
        self.param(e).is_some()
    }

    /// The heap parameter `e` loads, if it loads one.
    fn param(&self, e: &Expr) -> Option<Slot> {
        match e {
            Expr::Load(slot, ty) if ty.is_heap() && *slot < self.heap_changed.len() => Some(*slot),
            _ => None,
        }
    }

    /// Marks the heap parameter `e` loads, if it loads one, as changed.
    fn change(&mut self, e: &Expr) {
        if let Some(slot) = self.param(e) {
            self.heap_changed[slot] = true;
        }
    }
}

impl VisitMut for ParamUses {
    fn stmt(&mut self, s: &mut Stmt) {
        match s {
            Stmt::StoreHeap(slot, _) | Stmt::SetItem { target: slot, .. } => {
                if let Some(changed) = self.heap_changed.get_mut(*slot) {
                    *changed = true;
                }
            }
            Stmt::Store(slot, _) => {
                if let Some(stored) = self.scalar_stored.get_mut(*slot) {
                    *stored = true;
                }
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &mut Expr) {
        let read = match e {
            _ if self.is_param(e) => {
                self.loads += 1;
                0
            }
            Expr::Native { op, args, .. } if op.changes_receiver() => {
                self.change(&args[0]);
                0
            }
            Expr::Each {
                op: EachOp::Sort,
                args,
                ..
            } => {
                self.change(&args[0]);
                0
            }
            Expr::Native { args, .. } => usize::from(self.is_param(&args[0])),
            // A data builtin makes its result anew from what it reads.
            Expr::Direct { args, .. } => args.iter().filter(|a| self.is_param(a)).count(),
            // An array is unboxed: a copy of its numbers.
            Expr::CallUnboxing { args, .. } => args
                .iter()
                .filter(|a| a.ty() == Ty::Array && self.is_param(a))
                .count(),
            Expr::Guard(inner, ty) if !ty.is_heap() => usize::from(self.is_param(inner)),
            Expr::Mixed { op, lhs, rhs, .. } if *op != BinOp::Add => {
                usize::from(self.is_param(lhs)) + usize::from(self.is_param(rhs))
            }
            _ => 0,
        };
        self.reads += read;
    }
}

/// Statements, then the block's value.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) stmts: Vec<Stmt>,
    pub(crate) value: Expr,
}

impl Block {
    pub(crate) fn ty(&self) -> Ty {
        self.value.ty()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Stmt {
    /// `let`/`const` and `=` (a `let` gets a fresh slot, so both are stores).
    Store(Slot, Expr),
    /// An expression for its effects (its errors, its calls).
    Eval(Expr),
    /// `while cond { }`; `loop { }` has no condition. `cost` is charged per iteration.
    While {
        cond: Option<Expr>,
        body: Block,
        cost: u64,
    },
    /// `do { } while cond` (`until`: `do { } until cond`).
    Do {
        body: Block,
        cond: Expr,
        until: bool,
        cost: u64,
    },
    /// `for var in from..to` (or `..=`), with an optional 0-based counter.
    For {
        var: Slot,
        counter: Option<Slot>,
        from: Expr,
        to: Expr,
        inclusive: bool,
        body: Block,
        cost: u64,
    },
    /// `slot = value` for a heap slot (a value of any type is kept as a `Dynamic`).
    StoreHeap(Slot, Expr),
    /// `target[key] = value` on the array or map in a heap slot. `update`: `value` reads the
    /// element as [`Expr::Item`] (`m[k] = (m[k] ?? 0) + 1`, `a[i] += 1`), and the element is
    /// found once.
    SetItem {
        target: Slot,
        key: Expr,
        value: Expr,
        update: bool,
    },
    /// `for var in over`: an array's elements (`var` a `Dyn` heap slot) or a string's
    /// characters (`var` a `Char` slot, when `over` is known to be a string).
    ForEach {
        var: Slot,
        var_ty: Ty,
        counter: Option<Slot>,
        over: Expr,
        /// For `for k in m.keys()`: the heap slot that holds `m[k]` in each iteration, where the
        /// body's reads of `m[k]` were turned into reads of this slot.
        value: Option<Slot>,
        body: Block,
        cost: u64,
    },
    /// `array[index] = value`, `value` of the element type.
    SetIndex {
        array: Slot,
        index: Expr,
        value: Expr,
    },
    Break,
    Continue,
    Return(Expr),
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Unit,
    Char(char),
    Str(rhai::ImmutableString),
    /// A slot's value; a heap slot's when `Ty::is_heap`.
    Load(Slot, Ty),
    /// Both operands have type `operand`; the result type follows from `op`.
    Binary {
        op: BinOp,
        operand: Ty,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Unary {
        op: UnOp,
        arg: Box<Expr>,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    If {
        cond: Box<Expr>,
        then: Box<Block>,
        other: Box<Block>,
    },
    Block(Box<Block>),
    /// A call of specialization `callee` (an index into the compiled program).
    Call {
        callee: usize,
        args: Vec<Expr>,
        ret: Ty,
    },
    /// A call passing arrays of any values (`args` of type `Array`) to a function that runs on
    /// unboxed numbers: each such array is unboxed when the call runs, and the specialization
    /// for the kinds it holds is called (`callees`: each lowered one's parameter types, the one
    /// on arrays of any values last if it lowered, for arrays of other values; none fits, and
    /// the call goes back to Rhai).
    CallUnboxing {
        callees: Vec<(Vec<Ty>, usize)>,
        args: Vec<Expr>,
        ret: Ty,
    },
    /// `array[index]`, counting from the end when negative, as Rhai does.
    Index {
        array: Slot,
        index: Box<Expr>,
        elem: Ty,
    },
    /// `array.len()`.
    Len(Slot),
    /// A native function resolved when compiling; a method's receiver is `args[0]` (changed in
    /// place when it is a heap slot, as Rhai changes the variable).
    Native {
        op: Native,
        args: Vec<Expr>,
        ret: Ty,
    },
    /// A data builtin called without Rhai (see `data::Direct`).
    Direct {
        call: DirectCall,
        args: Vec<Expr>,
        ret: Ty,
    },
    /// A `Dyn` value used as `Ty` (checked when it runs).
    Guard(Box<Expr>, Ty),
    /// `lhs ?? rhs`.
    Coalesce {
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        ty: Ty,
    },
    /// An operator on values of which one at least is a heap value or a char, as Rhai's
    /// built-in operators do it (string joining and comparing, `Dyn` numbers).
    Mixed {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        ret: Ty,
    },
    /// `` `text ${value} text` ``: the parts' strings joined.
    Interpolate(Vec<Expr>),
    /// `[a, b]`.
    Array(Vec<Expr>),
    /// The element an updating [`Stmt::SetItem`] replaces, as it was.
    Item,
    /// `#{a: x, b: y}`.
    Map(Vec<(rhai::ImmutableString, Expr)>),
    /// `#{}` made as a hash table (see `native::Tally`), for a map the function builds by key;
    /// with a heap slot, the map in that slot (a parameter a top-level loop changes by key),
    /// taken and made one.
    Tally(Option<Slot>),
    /// A heap variable's value (`Load`) made Rhai's own first where it may hold a `Tally`.
    Settle(Box<Expr>),
    /// A heap local's value (`Load`) taken out of its slot, where nothing reads the variable
    /// afterwards (see `lower::last_use`).
    Moved(Box<Expr>),
    /// `switch value { .. }`: the block of the case equal to the value (same type), else
    /// `default`.
    Switch {
        value: Box<Expr>,
        cases: Vec<(SwitchKey, usize)>,
        blocks: Vec<Block>,
        default: Box<Block>,
    },
    /// `array.op(f)`: Rhai's array method `op`, calling specialization `callee` (a closure or a
    /// script function, given as a function pointer) on each element, with the element's index
    /// as its last argument when `index`. `args`: the receiver, the values of the `captured`
    /// variables of a closure (its first parameters), then `reduce`'s initial value.
    Each {
        op: EachOp,
        args: Vec<Expr>,
        captured: usize,
        callee: usize,
        index: bool,
    },
    /// A call whose callee's body was copied in place (see `inline.rs`): the arguments are
    /// stored in `params` (slots of the caller), then `body` runs one call level deeper,
    /// charged `entry_cost` as the call would be.
    Inlined {
        params: Vec<(Slot, Expr)>,
        body: Box<Block>,
        entry_cost: u64,
    },
}

/// The array methods that take a function, as Rhai 1.27 defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EachOp {
    /// A new array of the results.
    Map,
    /// A new array of the elements whose result is `true` (any other value counts as `false`).
    Filter,
    /// The results folded from the initial value (`()` if none): `f(result, element)`.
    Reduce,
    /// The array sorted in place by the comparer's result (see `closure/each.rs`).
    Sort,
    /// Whether every element's result is `true`.
    All,
    /// Whether some element's result is `true`.
    Some,
}

impl EachOp {
    /// The method `name` with `args` arguments after the receiver.
    pub(crate) fn named(name: &str, args: usize) -> Option<EachOp> {
        Some(match (name, args) {
            ("map", 1) => EachOp::Map,
            ("filter", 1) => EachOp::Filter,
            ("reduce", 1 | 2) => EachOp::Reduce,
            ("sort", 1) => EachOp::Sort,
            ("all", 1) => EachOp::All,
            ("some", 1) => EachOp::Some,
            _ => return None,
        })
    }

    pub(crate) fn ret(self) -> Ty {
        match self {
            EachOp::Map | EachOp::Filter => Ty::Array,
            EachOp::Reduce => Ty::Dyn,
            EachOp::Sort => Ty::Unit,
            EachOp::All | EachOp::Some => Ty::Bool,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Shl,
    Shr,
    BitAnd,
    BitOr,
    BitXor,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    pub(crate) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Not,
    /// int -> float
    ToFloat,
    /// float -> int (truncating; out of range is an error)
    ToInt,
    Abs,
    Sqrt,
    Floor,
    Ceiling,
    Round,
}

impl Expr {
    pub(crate) fn ty(&self) -> Ty {
        match self {
            Expr::Int(_) => Ty::Int,
            Expr::Float(_) => Ty::Float,
            Expr::Bool(_) | Expr::And(..) | Expr::Or(..) => Ty::Bool,
            Expr::Unit => Ty::Unit,
            Expr::Char(_) => Ty::Char,
            Expr::Str(_) | Expr::Interpolate(_) => Ty::Str,
            Expr::Array(_) => Ty::Array,
            Expr::Item => Ty::Dyn,
            Expr::Map(_) | Expr::Tally(_) => Ty::Map,
            Expr::Settle(e) | Expr::Moved(e) => e.ty(),
            Expr::Native { ret, .. } | Expr::Direct { ret, .. } | Expr::Mixed { ret, .. } => *ret,
            Expr::Guard(_, ty) | Expr::Coalesce { ty, .. } => *ty,
            Expr::Switch { default, .. } => default.ty(),
            Expr::Load(_, ty) => *ty,
            Expr::Binary { op, .. } if op.is_comparison() => Ty::Bool,
            Expr::Binary { operand, .. } => *operand,
            Expr::Unary { op, arg } => match op {
                UnOp::Not => Ty::Bool,
                UnOp::ToFloat | UnOp::Sqrt | UnOp::Floor | UnOp::Ceiling | UnOp::Round => Ty::Float,
                UnOp::ToInt => Ty::Int,
                UnOp::Neg | UnOp::Abs => arg.ty(),
            },
            Expr::If { then, .. } => then.ty(),
            Expr::Block(block) => block.ty(),
            Expr::Call { ret, .. } | Expr::CallUnboxing { ret, .. } => *ret,
            Expr::Each { op, .. } => op.ret(),
            Expr::Inlined { body, .. } => body.ty(),
            Expr::Index { elem, .. } => *elem,
            Expr::Len(_) => Ty::Int,
        }
    }

    /// Whether `break`, `continue` or `return` can escape from evaluating this.
    pub(crate) fn jumps(&self) -> bool {
        match self {
            Expr::Int(_)
            | Expr::Float(_)
            | Expr::Bool(_)
            | Expr::Unit
            | Expr::Char(_)
            | Expr::Str(_)
            | Expr::Item
            | Expr::Tally(_)
            | Expr::Load(..)
            | Expr::Len(_) => false,
            Expr::Native { args, .. }
            | Expr::Direct { args, .. }
            | Expr::Interpolate(args)
            | Expr::Array(args) => args.iter().any(Expr::jumps),
            Expr::Map(items) => items.iter().any(|(_, e)| e.jumps()),
            Expr::Guard(e, _) | Expr::Settle(e) | Expr::Moved(e) => e.jumps(),
            Expr::Coalesce { lhs, rhs, .. } | Expr::Mixed { lhs, rhs, .. } => {
                lhs.jumps() || rhs.jumps()
            }
            Expr::Switch {
                value,
                blocks,
                default,
                ..
            } => value.jumps() || default.jumps() || blocks.iter().any(Block::jumps),
            Expr::Binary { lhs, rhs, .. } | Expr::And(lhs, rhs) | Expr::Or(lhs, rhs) => {
                lhs.jumps() || rhs.jumps()
            }
            Expr::Unary { arg, .. } | Expr::Index { index: arg, .. } => arg.jumps(),
            Expr::If { cond, then, other } => cond.jumps() || then.jumps() || other.jumps(),
            Expr::Block(block) => block.jumps(),
            Expr::Call { args, .. } | Expr::CallUnboxing { args, .. } | Expr::Each { args, .. } => {
                args.iter().any(Expr::jumps)
            }
            Expr::Inlined { params, body, .. } => {
                params.iter().any(|(_, e)| e.jumps()) || body.jumps()
            }
        }
    }

    /// Operators, leaves and calls: what inlining weighs.
    pub(crate) fn size(&self) -> usize {
        1 + match self {
            Expr::Int(_)
            | Expr::Float(_)
            | Expr::Bool(_)
            | Expr::Unit
            | Expr::Char(_)
            | Expr::Str(_)
            | Expr::Item
            | Expr::Tally(_)
            | Expr::Load(..)
            | Expr::Len(_) => 0,
            Expr::Native { args, .. }
            | Expr::Direct { args, .. }
            | Expr::Interpolate(args)
            | Expr::Array(args) => args.iter().map(Expr::size).sum(),
            Expr::Map(items) => items.iter().map(|(_, e)| e.size()).sum(),
            Expr::Guard(e, _) | Expr::Settle(e) | Expr::Moved(e) => e.size(),
            Expr::Coalesce { lhs, rhs, .. } | Expr::Mixed { lhs, rhs, .. } => {
                lhs.size() + rhs.size()
            }
            Expr::Switch {
                value,
                blocks,
                default,
                ..
            } => value.size() + default.size() + blocks.iter().map(Block::size).sum::<usize>(),
            Expr::Binary { lhs, rhs, .. } | Expr::And(lhs, rhs) | Expr::Or(lhs, rhs) => {
                lhs.size() + rhs.size()
            }
            Expr::Unary { arg, .. } | Expr::Index { index: arg, .. } => arg.size(),
            Expr::If { cond, then, other } => cond.size() + then.size() + other.size(),
            Expr::Block(block) => block.size(),
            Expr::Call { args, .. } | Expr::CallUnboxing { args, .. } | Expr::Each { args, .. } => {
                args.iter().map(Expr::size).sum()
            }
            Expr::Inlined { params, body, .. } => {
                params.iter().map(|(_, e)| e.size()).sum::<usize>() + body.size()
            }
        }
    }
}

impl Block {
    /// Whether `break`, `continue` or `return` can escape from running this block (loops
    /// count: they are not weighed).
    pub(crate) fn jumps(&self) -> bool {
        self.value.jumps()
            || self.stmts.iter().any(|s| match s {
                Stmt::Store(_, e) | Stmt::StoreHeap(_, e) | Stmt::Eval(e) => e.jumps(),
                Stmt::SetIndex { index, value, .. }
                | Stmt::SetItem {
                    key: index, value, ..
                } => index.jumps() || value.jumps(),
                _ => true,
            })
    }

    /// The sizes of its expressions; loops and jumps are not weighed (see [`Block::jumps`]).
    pub(crate) fn size(&self) -> usize {
        let stmts: usize = self
            .stmts
            .iter()
            .map(|s| match s {
                Stmt::Store(_, e) | Stmt::StoreHeap(_, e) | Stmt::Eval(e) => e.size(),
                Stmt::SetIndex { index, value, .. }
                | Stmt::SetItem {
                    key: index, value, ..
                } => index.size() + value.size(),
                _ => 1,
            })
            .sum();
        stmts + self.value.size()
    }
}

/// Rewrites a function's typed form in place: called on every statement and expression, after
/// its children.
pub(crate) trait VisitMut {
    fn stmt(&mut self, _: &mut Stmt) {}
    fn expr(&mut self, _: &mut Expr) {}
}

impl Block {
    pub(crate) fn visit_mut(&mut self, v: &mut impl VisitMut) {
        for stmt in &mut self.stmts {
            stmt.visit_mut(v);
        }
        self.value.visit_mut(v);
    }
}

impl Stmt {
    pub(crate) fn visit_mut(&mut self, v: &mut impl VisitMut) {
        match self {
            Stmt::Store(_, e) | Stmt::StoreHeap(_, e) | Stmt::Eval(e) | Stmt::Return(e) => {
                e.visit_mut(v)
            }
            Stmt::ForEach { over, body, .. } => {
                over.visit_mut(v);
                body.visit_mut(v);
            }
            Stmt::SetIndex { index, value, .. }
            | Stmt::SetItem {
                key: index, value, ..
            } => {
                index.visit_mut(v);
                value.visit_mut(v);
            }
            Stmt::While { cond, body, .. } => {
                if let Some(cond) = cond {
                    cond.visit_mut(v);
                }
                body.visit_mut(v);
            }
            Stmt::Do { body, cond, .. } => {
                body.visit_mut(v);
                cond.visit_mut(v);
            }
            Stmt::For { from, to, body, .. } => {
                from.visit_mut(v);
                to.visit_mut(v);
                body.visit_mut(v);
            }
            Stmt::Break | Stmt::Continue => {}
        }
        v.stmt(self);
    }
}

impl Expr {
    /// Whether this expression may run statements or other functions (a block, a branch, a
    /// call, a closure over an array): what it reads then cannot be told from its loads alone.
    pub(crate) fn may_run_code(&self) -> bool {
        matches!(
            self,
            Expr::Block(_)
                | Expr::If { .. }
                | Expr::Switch { .. }
                | Expr::Call { .. }
                | Expr::CallUnboxing { .. }
                | Expr::Each { .. }
                | Expr::Inlined { .. }
        )
    }

    pub(crate) fn visit_mut(&mut self, v: &mut impl VisitMut) {
        match self {
            Expr::Int(_)
            | Expr::Float(_)
            | Expr::Bool(_)
            | Expr::Unit
            | Expr::Char(_)
            | Expr::Str(_)
            | Expr::Item
            | Expr::Tally(_)
            | Expr::Load(..)
            | Expr::Len(_) => {}
            Expr::Native { args, .. }
            | Expr::Direct { args, .. }
            | Expr::Interpolate(args)
            | Expr::Array(args) => args.iter_mut().for_each(|a| a.visit_mut(v)),
            Expr::Map(items) => items.iter_mut().for_each(|(_, e)| e.visit_mut(v)),
            Expr::Guard(e, _) | Expr::Settle(e) | Expr::Moved(e) => e.visit_mut(v),
            Expr::Coalesce { lhs, rhs, .. } | Expr::Mixed { lhs, rhs, .. } => {
                lhs.visit_mut(v);
                rhs.visit_mut(v);
            }
            Expr::Switch {
                value,
                blocks,
                default,
                ..
            } => {
                value.visit_mut(v);
                blocks.iter_mut().for_each(|b| b.visit_mut(v));
                default.visit_mut(v);
            }
            Expr::Binary { lhs, rhs, .. } | Expr::And(lhs, rhs) | Expr::Or(lhs, rhs) => {
                lhs.visit_mut(v);
                rhs.visit_mut(v);
            }
            Expr::Unary { arg, .. } | Expr::Index { index: arg, .. } => arg.visit_mut(v),
            Expr::If { cond, then, other } => {
                cond.visit_mut(v);
                then.visit_mut(v);
                other.visit_mut(v);
            }
            Expr::Block(block) => block.visit_mut(v),
            Expr::Call { args, .. } | Expr::CallUnboxing { args, .. } | Expr::Each { args, .. } => {
                args.iter_mut().for_each(|a| a.visit_mut(v))
            }
            Expr::Inlined { params, body, .. } => {
                params.iter_mut().for_each(|(_, a)| a.visit_mut(v));
                body.visit_mut(v);
            }
        }
        v.expr(self);
    }
}
