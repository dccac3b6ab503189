//! Arithmetic specialised by shape: `n % i == 0` or `n = 3 * n + 1` becomes one closure with its
//! operators and operand kinds fixed at compile time, so a hot loop matches on nothing.

use std::marker::PhantomData;

use super::{
    closure::{Bail, Ev, Frame, R, block_value, boolean, float, int},
    ir::{BinOp, Block, Expr, Ty, UnOp},
    ops,
};

/// An operand evaluated in place by the closure that uses it (an int, or a float).
pub(super) trait Val<T>: Send + Sync + 'static {
    fn eval(&self, fr: &mut Frame<'_>) -> R<T>;
}

/// An int local variable.
pub(super) struct Slot(usize);

/// A constant.
pub(super) struct Konst<T>(T);

/// Anything else, through its own closure.
pub(super) struct Code<T>(Ev<T>);

/// One operator over two operands.
pub(super) struct Bin<O, A, B>(A, B, PhantomData<fn() -> O>);

/// Division and remainder by a power of two: shifts and masks, which cannot fail.
pub(super) struct DivPow2 {
    slot: usize,
    shift: u32,
}

pub(super) struct RemPow2 {
    slot: usize,
    /// The divisor less one: the remainder's bits.
    mask: i64,
}

/// `x / k` or `x % k` when `x` is a slot and `k` a power of two above 1.
fn by_power_of_two(op: BinOp, x: &Expr, k: &Expr) -> Option<(usize, i64)> {
    match (op, x, k) {
        (BinOp::Div | BinOp::Rem, Expr::Load(slot, Ty::Int), Expr::Int(k))
            if *k > 1 && k.count_ones() == 1 =>
        {
            Some((*slot, *k))
        }
        _ => None,
    }
}

impl Val<i64> for Slot {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        Ok(fr.slot(self.0))
    }
}

impl<T: Copy + Send + Sync + 'static> Val<T> for Konst<T> {
    #[inline(always)]
    fn eval(&self, _: &mut Frame<'_>) -> R<T> {
        Ok(self.0)
    }
}

impl<T: 'static> Val<T> for Code<T> {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<T> {
        (self.0)(fr)
    }
}

impl<T: 'static, O: Op<T>, A: Val<T>, B: Val<T>> Val<T> for Bin<O, A, B> {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<T> {
        let x = self.0.eval(fr)?;
        let y = self.1.eval(fr)?;
        O::apply(x, y).ok_or(Bail::Fallback)
    }
}

impl Val<i64> for DivPow2 {
    /// Rounds towards zero, as Rhai's (and Rust's) integer division: negative numbers are
    /// biased by the divisor less one before the shift.
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        let x = fr.slot(self.slot);
        let bias = (x >> 63) & ((1 << self.shift) - 1);
        Ok((x + bias) >> self.shift)
    }
}

impl Val<i64> for RemPow2 {
    /// Takes the sign of the dividend, as Rhai's remainder does.
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        let x = fr.slot(self.slot);
        let low = x & self.mask;
        Ok(if x < 0 && low != 0 {
            low | !self.mask
        } else {
            low
        })
    }
}

/// The operators, as types: a closure is specialised for its own.
pub(super) struct Add;
pub(super) struct Sub;
pub(super) struct Mul;
pub(super) struct Div;
pub(super) struct Rem;
pub(super) struct Pow;
pub(super) struct Shl;
pub(super) struct Shr;
pub(super) struct BitAnd;
pub(super) struct BitOr;
pub(super) struct BitXor;
pub(super) struct Eq;
pub(super) struct Ne;
pub(super) struct Lt;
pub(super) struct Le;
pub(super) struct Gt;
pub(super) struct Ge;

/// Rhai's arithmetic on `T`: `None` where Rhai raises an error (floats never do).
pub(super) trait Op<T>: 'static {
    fn apply(x: T, y: T) -> Option<T>;
}

/// Integer comparisons.
pub(super) trait IntCmp: 'static {
    fn test(x: i64, y: i64) -> bool;
}

macro_rules! operators {
    ($trait:ty, $method:ident($t:ty) -> $out:ty { $($name:ident($x:ident, $y:ident) => $body:expr;)* }) => {
        $(
            impl $trait for $name {
                #[inline(always)]
                fn $method($x: $t, $y: $t) -> $out {
                    $body
                }
            }
        )*
    };
}

operators!(Op<i64>, apply(i64) -> Option<i64> {
    Add(x, y) => x.checked_add(y);
    Sub(x, y) => x.checked_sub(y);
    Mul(x, y) => x.checked_mul(y);
    Div(x, y) => ops::int_div(x, y);
    Rem(x, y) => x.checked_rem(y);
    Pow(x, y) => ops::int_pow(x, y);
    Shl(x, y) => Some(ops::shift_left(x, y));
    Shr(x, y) => Some(ops::shift_right(x, y));
    BitAnd(x, y) => Some(x & y);
    BitOr(x, y) => Some(x | y);
    BitXor(x, y) => Some(x ^ y);
});

operators!(Op<f64>, apply(f64) -> Option<f64> {
    Add(x, y) => Some(x + y);
    Sub(x, y) => Some(x - y);
    Mul(x, y) => Some(x * y);
    Div(x, y) => Some(x / y);
    Rem(x, y) => Some(x % y);
    Pow(x, y) => Some(x.powf(y));
});

operators!(IntCmp, test(i64) -> bool {
    Eq(x, y) => x == y;
    Ne(x, y) => x != y;
    Lt(x, y) => x < y;
    Le(x, y) => x <= y;
    Gt(x, y) => x > y;
    Ge(x, y) => x >= y;
});

/// What a shape is handed to: builds the closure that evaluates it in place.
pub(super) trait Sink<T> {
    type Out;
    fn take<V: Val<T>>(self, v: V) -> Self::Out;
}

/// A slot, a constant, or else a closure.
pub(super) fn narrow<S: Sink<i64>>(e: &Expr, sink: S) -> S::Out {
    match e {
        Expr::Load(slot, Ty::Int) => sink.take(Slot(*slot)),
        Expr::Int(k) => sink.take(Konst(*k)),
        _ => sink.take(Code(int(e))),
    }
}

/// [`narrow`], or one operator over two [`narrow`] operands.
pub(super) fn wide<S: Sink<i64>>(e: &Expr, sink: S) -> S::Out {
    match e {
        Expr::Binary {
            op,
            operand: Ty::Int,
            lhs,
            rhs,
        } if !op.is_comparison() => binary::<Narrow, S>(*op, lhs, rhs, sink),
        _ => narrow(e, sink),
    }
}

/// [`narrow`] without closures, or one operator over two such operands: what conditions take on
/// their left (a comparison of two [`wide`] operands would be thousands of instantiations).
pub(super) fn leafy<S: Sink<i64>>(e: &Expr, sink: S) -> S::Out {
    match e {
        Expr::Binary {
            op,
            operand: Ty::Int,
            lhs,
            rhs,
        } if !op.is_comparison() && is_leaf(lhs) && is_leaf(rhs) => {
            binary::<Leaves, S>(*op, lhs, rhs, sink)
        }
        _ => narrow(e, sink),
    }
}

fn is_leaf(e: &Expr) -> bool {
    matches!(e, Expr::Load(_, Ty::Int) | Expr::Int(_))
}

/// How an operator's operands of type `T` may be shaped.
trait Operands<T>: 'static {
    /// Whether `e` has one of these shapes.
    fn takes(e: &Expr) -> bool;
    fn shape<S: Sink<T>>(e: &Expr, sink: S) -> S::Out;
}

/// Anything [`narrow`] takes.
struct Narrow;

/// Slots and constants only (checked by the caller).
struct Leaves;

impl Operands<i64> for Narrow {
    fn takes(_: &Expr) -> bool {
        true
    }

    fn shape<S: Sink<i64>>(e: &Expr, sink: S) -> S::Out {
        narrow(e, sink)
    }
}

impl Operands<i64> for Leaves {
    fn takes(e: &Expr) -> bool {
        is_leaf(e)
    }

    fn shape<S: Sink<i64>>(e: &Expr, sink: S) -> S::Out {
        match e {
            Expr::Load(slot, Ty::Int) => sink.take(Slot(*slot)),
            Expr::Int(k) => sink.take(Konst(*k)),
            other => unreachable!("not a leaf: {other:?}"),
        }
    }
}

fn binary<P: Operands<i64>, S: Sink<i64>>(op: BinOp, lhs: &Expr, rhs: &Expr, sink: S) -> S::Out {
    if let Some((slot, k)) = by_power_of_two(op, lhs, rhs) {
        return if op == BinOp::Div {
            sink.take(DivPow2 {
                slot,
                shift: k.trailing_zeros(),
            })
        } else {
            sink.take(RemPow2 { slot, mask: k - 1 })
        };
    }
    match op {
        BinOp::Shl => pair::<i64, P, Shl, S>(lhs, rhs, sink),
        BinOp::Shr => pair::<i64, P, Shr, S>(lhs, rhs, sink),
        BinOp::BitAnd => pair::<i64, P, BitAnd, S>(lhs, rhs, sink),
        BinOp::BitOr => pair::<i64, P, BitOr, S>(lhs, rhs, sink),
        BinOp::BitXor => pair::<i64, P, BitXor, S>(lhs, rhs, sink),
        _ => arithmetic::<i64, P, S>(op, lhs, rhs, sink),
    }
}

/// `+ - * / % **`, which ints and floats share.
fn arithmetic<T: 'static, P: Operands<T>, S: Sink<T>>(
    op: BinOp,
    lhs: &Expr,
    rhs: &Expr,
    sink: S,
) -> S::Out
where
    Add: Op<T>,
    Sub: Op<T>,
    Mul: Op<T>,
    Div: Op<T>,
    Rem: Op<T>,
    Pow: Op<T>,
{
    match op {
        BinOp::Add => pair::<T, P, Add, S>(lhs, rhs, sink),
        BinOp::Sub => pair::<T, P, Sub, S>(lhs, rhs, sink),
        BinOp::Mul => pair::<T, P, Mul, S>(lhs, rhs, sink),
        BinOp::Div => pair::<T, P, Div, S>(lhs, rhs, sink),
        BinOp::Rem => pair::<T, P, Rem, S>(lhs, rhs, sink),
        BinOp::Pow => pair::<T, P, Pow, S>(lhs, rhs, sink),
        other => unreachable!("{other:?} is not arithmetic"),
    }
}

fn pair<T: 'static, P: Operands<T>, O: Op<T>, S: Sink<T>>(
    lhs: &Expr,
    rhs: &Expr,
    sink: S,
) -> S::Out {
    P::shape(
        lhs,
        Left::<P, O, S> {
            rhs,
            sink,
            op: PhantomData,
        },
    )
}

/// An operator whose left operand is shaped, waiting for its right one.
struct Left<'e, P, O, S> {
    rhs: &'e Expr,
    sink: S,
    op: PhantomData<fn() -> (P, O)>,
}

impl<T: 'static, P: Operands<T>, O: Op<T>, S: Sink<T>> Sink<T> for Left<'_, P, O, S> {
    type Out = S::Out;
    fn take<A: Val<T>>(self, a: A) -> S::Out {
        let Left { rhs, sink, .. } = self;
        P::shape(
            rhs,
            Right::<O, A, S> {
                a,
                sink,
                op: PhantomData,
            },
        )
    }
}

struct Right<O, A, S> {
    a: A,
    sink: S,
    op: PhantomData<fn() -> O>,
}

impl<T: 'static, O: Op<T>, A: Val<T>, S: Sink<T>> Sink<T> for Right<O, A, S> {
    type Out = S::Out;
    fn take<B: Val<T>>(self, b: B) -> S::Out {
        self.sink.take(Bin::<O, A, B>(self.a, b, PhantomData))
    }
}

/// An integer comparison as one closure: [`leafy`] on the left, [`narrow`] on the right.
pub(super) fn compare(op: BinOp, lhs: &Expr, rhs: &Expr) -> Ev<bool> {
    fn with<C: IntCmp>(lhs: &Expr, rhs: &Expr) -> Ev<bool> {
        leafy(
            lhs,
            CmpLeft::<C> {
                rhs,
                op: PhantomData,
            },
        )
    }
    match op {
        BinOp::Eq => with::<Eq>(lhs, rhs),
        BinOp::Ne => with::<Ne>(lhs, rhs),
        BinOp::Lt => with::<Lt>(lhs, rhs),
        BinOp::Le => with::<Le>(lhs, rhs),
        BinOp::Gt => with::<Gt>(lhs, rhs),
        BinOp::Ge => with::<Ge>(lhs, rhs),
        other => unreachable!("{other:?} does not give a bool"),
    }
}

struct CmpLeft<'e, C> {
    rhs: &'e Expr,
    op: PhantomData<fn() -> C>,
}

impl<C: IntCmp> Sink<i64> for CmpLeft<'_, C> {
    type Out = Ev<bool>;
    fn take<A: Val<i64>>(self, a: A) -> Ev<bool> {
        narrow(self.rhs, CmpRight::<C, A> { a, op: PhantomData })
    }
}

struct CmpRight<C, A> {
    a: A,
    op: PhantomData<fn() -> C>,
}

impl<C: IntCmp, A: Val<i64>> Sink<i64> for CmpRight<C, A> {
    type Out = Ev<bool>;
    fn take<B: Val<i64>>(self, b: B) -> Ev<bool> {
        let a = self.a;
        Box::new(move |fr| {
            let x = a.eval(fr)?;
            Ok(C::test(x, b.eval(fr)?))
        })
    }
}

/// A condition tested in place by the statement or `if` that uses it.
pub(super) trait Test: Send + Sync + 'static {
    fn test(&self, fr: &mut Frame<'_>) -> R<bool>;
}

/// A comparison of two operands.
pub(super) struct Compare<C, A, B>(A, B, PhantomData<fn() -> C>);

/// Any other condition, through its closure.
pub(super) struct CodeTest(Ev<bool>);

/// No condition: `loop`.
pub(super) struct Always;

impl Test for Always {
    #[inline(always)]
    fn test(&self, _: &mut Frame<'_>) -> R<bool> {
        Ok(true)
    }
}

impl<C: IntCmp, A: Val<i64>, B: Val<i64>> Test for Compare<C, A, B> {
    #[inline(always)]
    fn test(&self, fr: &mut Frame<'_>) -> R<bool> {
        let x = self.0.eval(fr)?;
        Ok(C::test(x, self.1.eval(fr)?))
    }
}

impl Test for CodeTest {
    #[inline(always)]
    fn test(&self, fr: &mut Frame<'_>) -> R<bool> {
        (self.0)(fr)
    }
}

/// What a condition's shape is handed to.
pub(super) trait TestSink {
    type Out;
    fn take<T: Test>(self, test: T) -> Self::Out;
}

/// A comparison of two slots or constants (`n < 2`, `n != 1`), or else a closure.
pub(super) fn condition<S: TestSink>(e: &Expr, sink: S) -> S::Out {
    shaped_condition::<Leaves, S>(e, sink)
}

/// [`condition`], also with an operator over two leaves on the left (`i * i <= n`,
/// `n % i == 0`): for the conditions of `while` and `if` statements, which loops test.
pub(super) fn loop_condition<S: TestSink>(e: &Expr, sink: S) -> S::Out {
    shaped_condition::<SmallArithmetic, S>(e, sink)
}

fn shaped_condition<P: Operands<i64>, S: TestSink>(e: &Expr, sink: S) -> S::Out {
    fn with<C: IntCmp, P: Operands<i64>, S: TestSink>(lhs: &Expr, rhs: &Expr, sink: S) -> S::Out {
        let left = TestLeft::<C, S> {
            rhs,
            sink,
            op: PhantomData,
        };
        P::shape(lhs, left)
    }
    match e {
        Expr::Binary {
            op,
            operand: Ty::Int,
            lhs,
            rhs,
        } if P::takes(lhs) && is_leaf(rhs) => match op {
            BinOp::Eq => with::<Eq, P, S>(lhs, rhs, sink),
            BinOp::Ne => with::<Ne, P, S>(lhs, rhs, sink),
            BinOp::Lt => with::<Lt, P, S>(lhs, rhs, sink),
            BinOp::Le => with::<Le, P, S>(lhs, rhs, sink),
            BinOp::Gt => with::<Gt, P, S>(lhs, rhs, sink),
            BinOp::Ge => with::<Ge, P, S>(lhs, rhs, sink),
            _ => sink.take(CodeTest(boolean(e))),
        },
        _ => sink.take(CodeTest(boolean(e))),
    }
}

/// A leaf, or `+ - * % &` over two leaves: the left side of a loop's condition.
struct SmallArithmetic;

impl Operands<i64> for SmallArithmetic {
    fn takes(e: &Expr) -> bool {
        match e {
            Expr::Binary {
                op: BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Rem | BinOp::BitAnd,
                operand: Ty::Int,
                lhs,
                rhs,
            } => is_leaf(lhs) && is_leaf(rhs),
            other => is_leaf(other),
        }
    }

    fn shape<S: Sink<i64>>(e: &Expr, sink: S) -> S::Out {
        let Expr::Binary { op, lhs, rhs, .. } = e else {
            return Leaves::shape(e, sink);
        };
        match op {
            BinOp::Rem => match by_power_of_two(*op, lhs, rhs) {
                Some((slot, k)) => sink.take(RemPow2 { slot, mask: k - 1 }),
                None => pair::<i64, Leaves, Rem, S>(lhs, rhs, sink),
            },
            BinOp::Add => pair::<i64, Leaves, Add, S>(lhs, rhs, sink),
            BinOp::Sub => pair::<i64, Leaves, Sub, S>(lhs, rhs, sink),
            BinOp::Mul => pair::<i64, Leaves, Mul, S>(lhs, rhs, sink),
            _ => pair::<i64, Leaves, BitAnd, S>(lhs, rhs, sink),
        }
    }
}

struct TestLeft<'e, C, S> {
    rhs: &'e Expr,
    sink: S,
    op: PhantomData<fn() -> C>,
}

impl<C: IntCmp, S: TestSink> Sink<i64> for TestLeft<'_, C, S> {
    type Out = S::Out;
    fn take<A: Val<i64>>(self, a: A) -> S::Out {
        let TestLeft { rhs, sink, .. } = self;
        Leaves::shape(
            rhs,
            TestRight::<C, A, S> {
                a,
                sink,
                op: PhantomData,
            },
        )
    }
}

struct TestRight<C, A, S> {
    a: A,
    sink: S,
    op: PhantomData<fn() -> C>,
}

impl<C: IntCmp, A: Val<i64>, S: TestSink> Sink<i64> for TestRight<C, A, S> {
    type Out = S::Out;
    fn take<B: Val<i64>>(self, b: B) -> S::Out {
        self.sink.take(Compare::<C, A, B>(self.a, b, PhantomData))
    }
}

/// An integer `if` whose branches are shaped too: `if n < 2 { n } else { ... }` reads `n` in
/// place (half the calls of a recursive function end in such a branch).
pub(super) fn int_if(cond: &Expr, then: &Block, other: &Block) -> Ev<i64> {
    condition(cond, IntIf { then, other })
}

/// A branch: its value shaped when it is a bare value, else the block's closure.
fn branch<S: Sink<i64>>(block: &Block, sink: S) -> S::Out {
    if block.stmts.is_empty() {
        narrow(&block.value, sink)
    } else {
        sink.take(Code(block_value(block, int(&block.value))))
    }
}

struct IntIf<'e> {
    then: &'e Block,
    other: &'e Block,
}

impl TestSink for IntIf<'_> {
    type Out = Ev<i64>;
    fn take<C: Test>(self, cond: C) -> Ev<i64> {
        let other = self.other;
        branch(self.then, IntIfThen { cond, other })
    }
}

struct IntIfThen<'e, C> {
    cond: C,
    other: &'e Block,
}

impl<C: Test> Sink<i64> for IntIfThen<'_, C> {
    type Out = Ev<i64>;
    fn take<A: Val<i64>>(self, then: A) -> Ev<i64> {
        let cond = self.cond;
        branch(self.other, IntIfElse { cond, then })
    }
}

struct IntIfElse<C, A> {
    cond: C,
    then: A,
}

impl<C: Test, A: Val<i64>> Sink<i64> for IntIfElse<C, A> {
    type Out = Ev<i64>;
    fn take<B: Val<i64>>(self, other: B) -> Ev<i64> {
        let IntIfElse { cond, then } = self;
        Box::new(move |fr| {
            if cond.test(fr)? {
                then.eval(fr)
            } else {
                other.eval(fr)
            }
        })
    }
}

/// A float local (its bits in the slot).
pub(super) struct FloatSlot(usize);

/// `a[i]` on an array of floats, `i` a slot: the inner loop's read.
pub(super) struct FloatElement {
    array: usize,
    index: usize,
}

impl Val<f64> for FloatElement {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        let i = fr.slot(self.index);
        fr.element(self.array, i)
            .map(|bits| f64::from_bits(bits as u64))
    }
}

/// An int made a float (`k.to_float()`, or an int operand of a float operator).
pub(super) struct Promoted<V>(V);

impl Val<f64> for FloatSlot {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        Ok(f64::from_bits(fr.slot(self.0) as u64))
    }
}

impl<V: Val<i64>> Val<f64> for Promoted<V> {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        Ok(self.0.eval(fr)? as f64)
    }
}

/// A float slot, a constant, a promoted [`narrow`] int, or else a closure.
pub(super) fn float_narrow<S: Sink<f64>>(e: &Expr, sink: S) -> S::Out {
    match e {
        Expr::Load(slot, Ty::Float) => sink.take(FloatSlot(*slot)),
        Expr::Float(k) => sink.take(Konst(*k)),
        Expr::Unary {
            op: UnOp::ToFloat,
            arg,
        } => narrow(arg, Promote(sink)),
        Expr::Index { array, index, .. } => match **index {
            Expr::Load(index, Ty::Int) => sink.take(FloatElement {
                array: *array,
                index,
            }),
            _ => sink.take(Code(float(e))),
        },
        _ => sink.take(Code(float(e))),
    }
}

/// [`float_narrow`], or one operator over two [`float_narrow`] operands.
pub(super) fn float_wide<S: Sink<f64>>(e: &Expr, sink: S) -> S::Out {
    match e {
        // (A comparison of floats is a bool, not a float.)
        Expr::Binary {
            op,
            operand: Ty::Float,
            lhs,
            rhs,
        } if !op.is_comparison() => arithmetic::<f64, FloatNarrow, S>(*op, lhs, rhs, sink),
        _ => float_narrow(e, sink),
    }
}

/// Anything [`float_narrow`] takes.
struct FloatNarrow;

impl Operands<f64> for FloatNarrow {
    fn takes(_: &Expr) -> bool {
        true
    }

    fn shape<S: Sink<f64>>(e: &Expr, sink: S) -> S::Out {
        float_narrow(e, sink)
    }
}

/// An int shape made a float.
struct Promote<S>(S);

impl<S: Sink<f64>> Sink<i64> for Promote<S> {
    type Out = S::Out;
    fn take<V: Val<i64>>(self, v: V) -> S::Out {
        self.0.take(Promoted(v))
    }
}
