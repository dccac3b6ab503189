//! Integer arithmetic specialised by shape: `n % i == 0` or `n = 3 * n + 1` becomes one closure
//! with its operators and operand kinds fixed at compile time, so a hot loop matches on nothing.

use std::marker::PhantomData;

use super::{
    closure::{Bail, Ev, Frame, R, block_value, boolean, float, int},
    ir::{BinOp, Block, Expr, Ty, UnOp},
    ops,
};

/// An integer operand evaluated in place by the closure that uses it.
pub(super) trait IntVal: Send + Sync + 'static {
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64>;
}

/// A local variable.
pub(super) struct Slot(usize);

/// A constant.
pub(super) struct Konst(i64);

/// Anything else, through its own closure.
pub(super) struct Code(Ev<i64>);

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

impl IntVal for Slot {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        Ok(fr.slot(self.0))
    }
}

impl IntVal for Konst {
    #[inline(always)]
    fn eval(&self, _: &mut Frame<'_>) -> R<i64> {
        Ok(self.0)
    }
}

impl IntVal for Code {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        (self.0)(fr)
    }
}

impl<O: IntOp, A: IntVal, B: IntVal> IntVal for Bin<O, A, B> {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        let x = self.0.eval(fr)?;
        let y = self.1.eval(fr)?;
        O::apply(x, y).ok_or(Bail::Fallback)
    }
}

impl IntVal for DivPow2 {
    /// Rounds towards zero, as Rhai's (and Rust's) integer division: negative numbers are
    /// biased by the divisor less one before the shift.
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<i64> {
        let x = fr.slot(self.slot);
        let bias = (x >> 63) & ((1 << self.shift) - 1);
        Ok((x + bias) >> self.shift)
    }
}

impl IntVal for RemPow2 {
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

/// Rhai's integer operators: `None` where Rhai raises an error.
pub(super) trait IntOp: 'static {
    fn apply(x: i64, y: i64) -> Option<i64>;
}

/// Integer comparisons.
pub(super) trait IntCmp: 'static {
    fn test(x: i64, y: i64) -> bool;
}

macro_rules! operators {
    ($trait:ident :: $method:ident -> $out:ty { $($name:ident($x:ident, $y:ident) => $body:expr;)* }) => {
        $(
            pub(super) struct $name;
            impl $trait for $name {
                #[inline(always)]
                fn $method($x: i64, $y: i64) -> $out {
                    $body
                }
            }
        )*
    };
}

operators!(IntOp::apply -> Option<i64> {
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

operators!(IntCmp::test -> bool {
    Eq(x, y) => x == y;
    Ne(x, y) => x != y;
    Lt(x, y) => x < y;
    Le(x, y) => x <= y;
    Gt(x, y) => x > y;
    Ge(x, y) => x >= y;
});

/// What a shape is handed to: builds the closure that evaluates it in place.
pub(super) trait Sink {
    type Out;
    fn take<V: IntVal>(self, v: V) -> Self::Out;
}

/// A slot, a constant, or else a closure.
pub(super) fn narrow<S: Sink>(e: &Expr, sink: S) -> S::Out {
    match e {
        Expr::Load(slot, Ty::Int) => sink.take(Slot(*slot)),
        Expr::Int(k) => sink.take(Konst(*k)),
        _ => sink.take(Code(int(e))),
    }
}

/// [`narrow`], or one operator over two [`narrow`] operands.
pub(super) fn wide<S: Sink>(e: &Expr, sink: S) -> S::Out {
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
pub(super) fn leafy<S: Sink>(e: &Expr, sink: S) -> S::Out {
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

/// How an operator's operands may be shaped.
trait Operands: 'static {
    /// Whether `e` has one of these shapes.
    fn takes(e: &Expr) -> bool;
    fn shape<S: Sink>(e: &Expr, sink: S) -> S::Out;
}

/// Anything [`narrow`] takes.
struct Narrow;

/// Slots and constants only (checked by the caller).
struct Leaves;

impl Operands for Narrow {
    fn takes(_: &Expr) -> bool {
        true
    }

    fn shape<S: Sink>(e: &Expr, sink: S) -> S::Out {
        narrow(e, sink)
    }
}

impl Operands for Leaves {
    fn takes(e: &Expr) -> bool {
        is_leaf(e)
    }

    fn shape<S: Sink>(e: &Expr, sink: S) -> S::Out {
        match e {
            Expr::Load(slot, Ty::Int) => sink.take(Slot(*slot)),
            Expr::Int(k) => sink.take(Konst(*k)),
            other => unreachable!("not a leaf: {other:?}"),
        }
    }
}

fn binary<P: Operands, S: Sink>(op: BinOp, lhs: &Expr, rhs: &Expr, sink: S) -> S::Out {
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
        BinOp::Add => pair::<P, Add, S>(lhs, rhs, sink),
        BinOp::Sub => pair::<P, Sub, S>(lhs, rhs, sink),
        BinOp::Mul => pair::<P, Mul, S>(lhs, rhs, sink),
        BinOp::Div => pair::<P, Div, S>(lhs, rhs, sink),
        BinOp::Rem => pair::<P, Rem, S>(lhs, rhs, sink),
        BinOp::Pow => pair::<P, Pow, S>(lhs, rhs, sink),
        BinOp::Shl => pair::<P, Shl, S>(lhs, rhs, sink),
        BinOp::Shr => pair::<P, Shr, S>(lhs, rhs, sink),
        BinOp::BitAnd => pair::<P, BitAnd, S>(lhs, rhs, sink),
        BinOp::BitOr => pair::<P, BitOr, S>(lhs, rhs, sink),
        BinOp::BitXor => pair::<P, BitXor, S>(lhs, rhs, sink),
        cmp => unreachable!("{cmp:?} does not give an int"),
    }
}

fn pair<P: Operands, O: IntOp, S: Sink>(lhs: &Expr, rhs: &Expr, sink: S) -> S::Out {
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

impl<P: Operands, O: IntOp, S: Sink> Sink for Left<'_, P, O, S> {
    type Out = S::Out;
    fn take<A: IntVal>(self, a: A) -> S::Out {
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

impl<O: IntOp, A: IntVal, S: Sink> Sink for Right<O, A, S> {
    type Out = S::Out;
    fn take<B: IntVal>(self, b: B) -> S::Out {
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

impl<C: IntCmp> Sink for CmpLeft<'_, C> {
    type Out = Ev<bool>;
    fn take<A: IntVal>(self, a: A) -> Ev<bool> {
        narrow(self.rhs, CmpRight::<C, A> { a, op: PhantomData })
    }
}

struct CmpRight<C, A> {
    a: A,
    op: PhantomData<fn() -> C>,
}

impl<C: IntCmp, A: IntVal> Sink for CmpRight<C, A> {
    type Out = Ev<bool>;
    fn take<B: IntVal>(self, b: B) -> Ev<bool> {
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

impl<C: IntCmp, A: IntVal, B: IntVal> Test for Compare<C, A, B> {
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

fn shaped_condition<P: Operands, S: TestSink>(e: &Expr, sink: S) -> S::Out {
    fn with<C: IntCmp, P: Operands, S: TestSink>(lhs: &Expr, rhs: &Expr, sink: S) -> S::Out {
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

impl Operands for SmallArithmetic {
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

    fn shape<S: Sink>(e: &Expr, sink: S) -> S::Out {
        let Expr::Binary { op, lhs, rhs, .. } = e else {
            return Leaves::shape(e, sink);
        };
        match op {
            BinOp::Rem => match by_power_of_two(*op, lhs, rhs) {
                Some((slot, k)) => sink.take(RemPow2 { slot, mask: k - 1 }),
                None => pair::<Leaves, Rem, S>(lhs, rhs, sink),
            },
            BinOp::Add => pair::<Leaves, Add, S>(lhs, rhs, sink),
            BinOp::Sub => pair::<Leaves, Sub, S>(lhs, rhs, sink),
            BinOp::Mul => pair::<Leaves, Mul, S>(lhs, rhs, sink),
            _ => pair::<Leaves, BitAnd, S>(lhs, rhs, sink),
        }
    }
}

struct TestLeft<'e, C, S> {
    rhs: &'e Expr,
    sink: S,
    op: PhantomData<fn() -> C>,
}

impl<C: IntCmp, S: TestSink> Sink for TestLeft<'_, C, S> {
    type Out = S::Out;
    fn take<A: IntVal>(self, a: A) -> S::Out {
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

impl<C: IntCmp, A: IntVal, S: TestSink> Sink for TestRight<C, A, S> {
    type Out = S::Out;
    fn take<B: IntVal>(self, b: B) -> S::Out {
        self.sink.take(Compare::<C, A, B>(self.a, b, PhantomData))
    }
}

/// An integer `if` whose branches are shaped too: `if n < 2 { n } else { ... }` reads `n` in
/// place (half the calls of a recursive function end in such a branch).
pub(super) fn int_if(cond: &Expr, then: &Block, other: &Block) -> Ev<i64> {
    condition(cond, IntIf { then, other })
}

/// A branch: its value shaped when it is a bare value, else the block's closure.
fn branch<S: Sink>(block: &Block, sink: S) -> S::Out {
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

impl<C: Test> Sink for IntIfThen<'_, C> {
    type Out = Ev<i64>;
    fn take<A: IntVal>(self, then: A) -> Ev<i64> {
        let cond = self.cond;
        branch(self.other, IntIfElse { cond, then })
    }
}

struct IntIfElse<C, A> {
    cond: C,
    then: A,
}

impl<C: Test, A: IntVal> Sink for IntIfElse<C, A> {
    type Out = Ev<i64>;
    fn take<B: IntVal>(self, other: B) -> Ev<i64> {
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

/// A float operand evaluated in place by the closure that uses it.
pub(super) trait FloatVal: Send + Sync + 'static {
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64>;
}

/// A float local (its bits in the slot).
pub(super) struct FloatSlot(usize);

pub(super) struct FloatKonst(f64);

pub(super) struct FloatCode(Ev<f64>);

/// `a[i]` on an array of floats, `i` a slot: the inner loop's read.
pub(super) struct FloatElement {
    array: usize,
    index: usize,
}

impl FloatVal for FloatElement {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        let i = fr.slot(self.index);
        fr.element(self.array, i)
            .map(|bits| f64::from_bits(bits as u64))
    }
}

/// An int made a float (`k.to_float()`, or an int operand of a float operator).
pub(super) struct Promoted<V>(V);

pub(super) struct FloatBin<O, A, B>(A, B, PhantomData<fn() -> O>);

impl FloatVal for FloatSlot {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        Ok(f64::from_bits(fr.slot(self.0) as u64))
    }
}

impl FloatVal for FloatKonst {
    #[inline(always)]
    fn eval(&self, _: &mut Frame<'_>) -> R<f64> {
        Ok(self.0)
    }
}

impl FloatVal for FloatCode {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        (self.0)(fr)
    }
}

impl<V: IntVal> FloatVal for Promoted<V> {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        Ok(self.0.eval(fr)? as f64)
    }
}

impl<O: FloatOp, A: FloatVal, B: FloatVal> FloatVal for FloatBin<O, A, B> {
    #[inline(always)]
    fn eval(&self, fr: &mut Frame<'_>) -> R<f64> {
        let x = self.0.eval(fr)?;
        Ok(O::apply(x, self.1.eval(fr)?))
    }
}

/// Float arithmetic (IEEE: it cannot fail).
pub(super) trait FloatOp: 'static {
    fn apply(x: f64, y: f64) -> f64;
}

macro_rules! float_operators {
    ($($name:ident($x:ident, $y:ident) => $body:expr;)*) => {
        $(
            pub(super) struct $name;
            impl FloatOp for $name {
                #[inline(always)]
                fn apply($x: f64, $y: f64) -> f64 {
                    $body
                }
            }
        )*
    };
}

float_operators! {
    FloatAdd(x, y) => x + y;
    FloatSub(x, y) => x - y;
    FloatMul(x, y) => x * y;
    FloatDiv(x, y) => x / y;
    FloatRem(x, y) => x % y;
    FloatPow(x, y) => x.powf(y);
}

/// What a float shape is handed to.
pub(super) trait FloatSink {
    type Out;
    fn take<V: FloatVal>(self, v: V) -> Self::Out;
}

/// A float slot, a constant, a promoted [`narrow`] int, or else a closure.
pub(super) fn float_narrow<S: FloatSink>(e: &Expr, sink: S) -> S::Out {
    match e {
        Expr::Load(slot, Ty::Float) => sink.take(FloatSlot(*slot)),
        Expr::Float(k) => sink.take(FloatKonst(*k)),
        Expr::Unary {
            op: UnOp::ToFloat,
            arg,
        } => narrow(arg, Promote(sink)),
        Expr::Index { array, index, .. } if matches!(**index, Expr::Load(_, Ty::Int)) => {
            let Expr::Load(index, _) = **index else {
                unreachable!("matched above")
            };
            sink.take(FloatElement {
                array: *array,
                index,
            })
        }
        _ => sink.take(FloatCode(float(e))),
    }
}

/// [`float_narrow`], or one operator over two [`float_narrow`] operands.
pub(super) fn float_wide<S: FloatSink>(e: &Expr, sink: S) -> S::Out {
    fn with<O: FloatOp, S: FloatSink>(lhs: &Expr, rhs: &Expr, sink: S) -> S::Out {
        float_narrow(
            lhs,
            FloatLeft::<O, S> {
                rhs,
                sink,
                op: PhantomData,
            },
        )
    }
    let Expr::Binary {
        op,
        operand: Ty::Float,
        lhs,
        rhs,
    } = e
    else {
        return float_narrow(e, sink);
    };
    match op {
        BinOp::Add => with::<FloatAdd, S>(lhs, rhs, sink),
        BinOp::Sub => with::<FloatSub, S>(lhs, rhs, sink),
        BinOp::Mul => with::<FloatMul, S>(lhs, rhs, sink),
        BinOp::Div => with::<FloatDiv, S>(lhs, rhs, sink),
        BinOp::Rem => with::<FloatRem, S>(lhs, rhs, sink),
        BinOp::Pow => with::<FloatPow, S>(lhs, rhs, sink),
        _ => float_narrow(e, sink), // comparisons: not a float
    }
}

/// An int shape made a float.
struct Promote<S>(S);

impl<S: FloatSink> Sink for Promote<S> {
    type Out = S::Out;
    fn take<V: IntVal>(self, v: V) -> S::Out {
        self.0.take(Promoted(v))
    }
}

struct FloatLeft<'e, O, S> {
    rhs: &'e Expr,
    sink: S,
    op: PhantomData<fn() -> O>,
}

impl<O: FloatOp, S: FloatSink> FloatSink for FloatLeft<'_, O, S> {
    type Out = S::Out;
    fn take<A: FloatVal>(self, a: A) -> S::Out {
        let FloatLeft { rhs, sink, .. } = self;
        float_narrow(
            rhs,
            FloatRight::<O, A, S> {
                a,
                sink,
                op: PhantomData,
            },
        )
    }
}

struct FloatRight<O, A, S> {
    a: A,
    sink: S,
    op: PhantomData<fn() -> O>,
}

impl<O: FloatOp, A: FloatVal, S: FloatSink> FloatSink for FloatRight<O, A, S> {
    type Out = S::Out;
    fn take<B: FloatVal>(self, b: B) -> S::Out {
        self.sink.take(FloatBin::<O, A, B>(self.a, b, PhantomData))
    }
}
