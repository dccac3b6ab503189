//! Lowering of strings, characters, arrays of any values and object maps: literals, natives
//! resolved by name and receiver type, indexing, `??`, `for` over arrays and strings, `switch`.
//! A value whose type is known only when it runs is `Dyn`, and is checked where a type is needed.

use rhai::{Expr as RExpr, ImmutableString};

use super::{FnLowerer, R, ty_name};
use crate::{
    data::Kind,
    fast::ir::{BinOp, Block, EachOp, Expr, Native, Slot, Stmt, SwitchKey, Ty, VisitMut},
};

/// The tier's type for a data builtin's parameter or result.
fn ty_of(kind: Kind) -> Ty {
    match kind {
        Kind::Str => Ty::Str,
        Kind::Map => Ty::Map,
        Kind::Array => Ty::Array,
        Kind::Bool => Ty::Bool,
    }
}

impl FnLowerer<'_, '_> {
    /// Refuses when this program may not compile heap values (see `Source::no_heap`).
    pub(super) fn heap_allowed(&self) -> R<()> {
        match &self.session.source.no_heap {
            Some(why) => self.refuse(format!("uses strings, arrays or maps, and {why}")),
            None => Ok(()),
        }
    }

    /// Literals and other expressions of the heap subset; `None` when `e` is not one of them.
    pub(super) fn heap_expr(&mut self, e: &RExpr) -> Option<R<Expr>> {
        Some(match e {
            RExpr::StringConstant(s, _) => Ok(Expr::Str(s.clone())),
            RExpr::CharConstant(c, _) => Ok(Expr::Char(*c)),
            RExpr::InterpolatedString(parts, _) => self.interpolate(parts),
            RExpr::Array(items, _) => self.array_literal(items),
            RExpr::Map(map, _) => self.map_literal(&map.0),
            RExpr::Coalesce(chain, _) => self.coalesce(chain),
            RExpr::DynamicConstant(d, _) if super::scalar_constant(d).is_none() => self.constant(d),
            _ => return None,
        })
    }

    /// A constant the parser folded (`[]`, `#{}`, `[1, 2]`), built afresh where it is used.
    fn constant(&self, d: &rhai::Dynamic) -> R<Expr> {
        if let Some(scalar) = super::scalar_constant(d) {
            return Ok(scalar);
        }
        if let Some(s) = d.read_lock::<ImmutableString>() {
            return Ok(Expr::Str(s.clone()));
        }
        if let Ok(array) = d.as_array_ref() {
            let items = array
                .iter()
                .map(|i| self.constant(i))
                .collect::<R<Vec<_>>>()?;
            return Ok(Expr::Array(items));
        }
        if let Ok(map) = d.as_map_ref() {
            let items = map
                .iter()
                .map(|(k, v)| Ok((ImmutableString::from(k.as_str()), self.constant(v)?)))
                .collect::<R<Vec<_>>>()?;
            return Ok(Expr::Map(items));
        }
        self.refuse(format!("a constant of type {}", d.type_name()))
    }

    fn interpolate(&mut self, parts: &[RExpr]) -> R<Expr> {
        let parts = parts
            .iter()
            .map(|p| self.any_expr(p))
            .collect::<R<Vec<_>>>()?;
        if let Some(bad) = parts.iter().find(|p| !shows(p.ty())) {
            return self.refuse(format!("interpolates {}", ty_name(bad.ty())));
        }
        Ok(Expr::Interpolate(parts))
    }

    fn array_literal(&mut self, items: &[RExpr]) -> R<Expr> {
        let items = items.iter().map(|i| self.expr(i)).collect::<R<Vec<_>>>()?;
        Ok(Expr::Array(items))
    }

    fn map_literal(&mut self, items: &[(rhai::Ident, RExpr)]) -> R<Expr> {
        let items = items
            .iter()
            .map(|(k, v)| Ok((k.name.clone(), self.expr(v)?)))
            .collect::<R<Vec<_>>>()?;
        Ok(Expr::Map(items))
    }

    fn coalesce(&mut self, chain: &[RExpr]) -> R<Expr> {
        let mut parts = chain.iter();
        let Some(first) = parts.next() else {
            return Ok(Expr::Unit);
        };
        let mut acc = self.expr(first)?;
        for part in parts {
            let rhs = self.expr(part)?;
            let ty = if acc.ty() == rhs.ty() {
                rhs.ty()
            } else {
                Ty::Dyn
            };
            acc = Expr::Coalesce {
                lhs: Box::new(acc),
                rhs: Box::new(rhs),
                ty,
            };
        }
        Ok(acc)
    }

    /// `value` as a `ty`: a `Dyn` is checked when it runs; any type goes into a `Dyn`.
    pub(super) fn coerce(&self, value: Expr, ty: Ty, what: &str) -> R<Expr> {
        match (value.ty(), ty) {
            (from, to) if from == to => Ok(value),
            (_, Ty::Dyn) if value.ty().elem().is_none() => Ok(value),
            (Ty::Dyn, to) if to.elem().is_none() => Ok(Expr::Guard(Box::new(value), to)),
            (from, to) => self.refuse(format!(
                "changes the type of {what} from {} to {}",
                ty_name(to),
                ty_name(from)
            )),
        }
    }

    /// Whether `e` is a variable a method may change: a heap local that is not a constant
    /// (Rhai refuses a changing method on a constant).
    pub(super) fn is_variable(&self, e: &Expr) -> bool {
        let Expr::Load(slot, ty) = e else {
            return false;
        };
        let local = self
            .scope
            .iter()
            .rev()
            .find(|l| l.slot == *slot && l.ty.is_heap() == ty.is_heap());
        ty.is_heap() && local.is_some_and(|l| !l.constant)
    }

    /// The native function `name` on `args` (a method's receiver first), resolved by its
    /// receiver's type, `None` when the tier does not have it.
    pub(super) fn native(&mut self, name: &str, args: &[Expr]) -> R<Option<Expr>> {
        let Some(op) = Native::named(name, args.len()) else {
            return self.direct(name, args);
        };
        if self.session.source.overridden(name) {
            return self.refuse(format!("calls `{name}`, which the host redefined"));
        }
        let this = args[0].ty();
        let text = |t: Ty| matches!(t, Ty::Str | Ty::Dyn);
        let ret = match op {
            Native::Len if this.is_heap() => Ty::Int,
            Native::Split if text(this) && pattern(args[1].ty()) => Ty::Array,
            Native::Contains if matches!(this, Ty::Map | Ty::Dyn) && text(args[1].ty()) => Ty::Bool,
            Native::Contains | Native::StartsWith | Native::EndsWith
                if text(this) && pattern(args[1].ty()) =>
            {
                Ty::Bool
            }
            Native::IndexOf if text(this) && pattern(args[1].ty()) => Ty::Int,
            Native::SubString if text(this) && ints(&args[1..]) => Ty::Str,
            Native::SubStringFrom if text(this) && ints(&args[1..]) => Ty::Str,
            Native::Trim if text(this) => Ty::Unit,
            Native::ToUpper | Native::ToLower if text(this) => Ty::Str,
            Native::Replace if text(this) && strs(&args[1..]) => Ty::Unit,
            Native::ParseInt if text(this) => Ty::Int,
            Native::ParseFloat if text(this) => Ty::Float,
            Native::ToString if shows(this) => Ty::Str,
            Native::Push | Native::Pad if matches!(this, Ty::Array | Ty::Dyn) => {
                if op == Native::Pad && !ints(&args[1..2]) {
                    return Ok(None);
                }
                Ty::Unit
            }
            Native::Keys | Native::Values if matches!(this, Ty::Map | Ty::Dyn) => Ty::Array,
            Native::Extract | Native::ExtractFrom
                if matches!(this, Ty::Array | Ty::Dyn) && ints(&args[1..]) =>
            {
                Ty::Array
            }
            _ => return Ok(None),
        };
        if op.changes_receiver() && !self.is_variable(&args[0]) {
            return self.refuse(format!("calls `{name}` on a value that is not a variable"));
        }
        Ok(Some(Expr::Native {
            op,
            args: args.to_vec(),
            ret,
        }))
    }

    /// A data builtin (`read_lines`, `regex_find_all`...) on arguments that may be of its types.
    fn direct(&mut self, name: &str, args: &[Expr]) -> R<Option<Expr>> {
        let Some(call) = self.session.source.direct(name, args.len()) else {
            return Ok(None);
        };
        let fits = |(arg, kind): (&Expr, &Kind)| arg.ty() == Ty::Dyn || arg.ty() == ty_of(*kind);
        if !args.iter().zip(call.f.params).all(fits) {
            return Ok(None);
        }
        self.heap_allowed()?;
        Ok(Some(Expr::Direct {
            call: call.clone(),
            args: args.to_vec(),
            ret: ty_of(call.f.returns),
        }))
    }

    /// `target[key]` on a string, an array of any values or a map.
    pub(super) fn heap_index(&mut self, target: Expr, key: Expr) -> R<Expr> {
        let ret = match (target.ty(), key.ty()) {
            (Ty::Str, Ty::Int) => Ty::Char,
            (Ty::Array | Ty::Map | Ty::Str | Ty::Dyn, Ty::Int | Ty::Str | Ty::Dyn) => Ty::Dyn,
            (t, k) => {
                return self.refuse(format!("indexes {} with {}", ty_name(t), ty_name(k)));
            }
        };
        Ok(Expr::Native {
            op: Native::Index,
            args: vec![target, key],
            ret,
        })
    }

    /// `target.name`: a map's value, or the `len` of a string or array.
    pub(super) fn property(&mut self, target: Expr, name: &ImmutableString) -> R<Expr> {
        match target.ty() {
            Ty::Map | Ty::Dyn => self.heap_index(target, Expr::Str(name.clone())),
            Ty::Str | Ty::Array if name == "len" => Ok(Expr::Native {
                op: Native::Len,
                args: vec![target],
                ret: Ty::Int,
            }),
            ty => self.refuse(format!("reads the property `{name}` of {}", ty_name(ty))),
        }
    }

    /// `target[key] = value` (or `op=`) on an array or map variable.
    pub(super) fn set_item(
        &mut self,
        op: &rhai::OpAssignment,
        x: &rhai::BinaryExpr,
        rhs: &RExpr,
    ) -> R<Stmt> {
        let RExpr::Variable(var, _, _) = &x.lhs else {
            return self.refuse("assigns into an element of something other than a variable");
        };
        let Some(local) = self.lookup(var.1.as_str()) else {
            return self.refuse(format!("assigns into `{}`, which is not a local", var.1));
        };
        if local.constant {
            return self.refuse(format!("assigns into the constant `{}`", var.1));
        }
        let (target, ty) = (local.slot, local.ty);
        if !matches!(ty, Ty::Array | Ty::Map | Ty::Dyn) {
            return self.refuse(format!("assigns into an element of {}", ty_name(ty)));
        }
        let key = self.expr(&x.rhs)?;
        let rhs = self.expr(rhs)?;
        let value = match op.get_op_assignment_info() {
            None => rhs,
            Some((_, _, _, _, base, _)) => {
                let element = self.heap_index(Expr::Load(target, ty), key.clone())?;
                self.binary(base, element, rhs)?
            }
        };
        Ok(match updated_item(target, &key, &value) {
            Some(value) => Stmt::SetItem {
                target,
                key,
                value,
                update: true,
            },
            None => Stmt::SetItem {
                target,
                key,
                value,
                update: false,
            },
        })
    }

    /// `for var in over` where `over` is an array or a string.
    pub(super) fn for_each(
        &mut self,
        var: &str,
        counter: Option<&rhai::Ident>,
        flow: &rhai::FlowControl,
    ) -> R<Stmt> {
        let over = self.expr(&flow.expr)?;
        let var_ty = match over.ty() {
            Ty::Str => Ty::Char,
            Ty::Array | Ty::Dyn => Ty::Dyn,
            ty => return self.refuse(format!("`for` over {}", ty_name(ty))),
        };
        let mut slots: (Slot, Option<Slot>) = (0, None);
        let (mut body, cost) = self.loop_body(&flow.body, |this| {
            slots.0 = this.declare(var, var_ty, false);
            slots.1 = counter.map(|c| this.declare(&c.name, Ty::Int, false));
            Ok(())
        })?;
        let value = self.entry_values(&over, slots.0, &mut body);
        Ok(Stmt::ForEach {
            var: slots.0,
            var_ty,
            counter: slots.1,
            over,
            value,
            body,
            cost,
        })
    }

    /// `for k in m.keys()` whose body reads `m[k]` and changes neither `m` nor `k`: the loop
    /// walks the map's entries, and each `m[k]` reads the entry's value from a slot of its own
    /// instead of searching the map for the key it has just given (a `BTreeMap` search of
    /// string keys cost about 1,300 instructions in a map of 5,000).
    fn entry_values(&mut self, over: &Expr, key: Slot, body: &mut Block) -> Option<Slot> {
        let Expr::Native {
            op: Native::Keys,
            args,
            ..
        } = over
        else {
            return None;
        };
        let Expr::Load(map, _) = args[0] else {
            return None;
        };
        let mut writes = Writes {
            slots: [map, key],
            found: false,
        };
        body.visit_mut(&mut writes);
        if writes.found {
            return None;
        }
        let mut reads = EntryReads {
            map,
            key,
            value: self.heap_slots,
            replaced: 0,
        };
        body.visit_mut(&mut reads);
        (reads.replaced > 0).then(|| {
            self.heap_slots += 1;
            reads.value
        })
    }

    /// `switch` on constants (no ranges, no conditions). The case values are in the AST with
    /// Rhai's `grain` feature (mpscript's default); without it, only their hashes are.
    #[cfg(feature = "grain")]
    pub(super) fn switch(
        &mut self,
        x: &(RExpr, rhai::SwitchCasesCollection),
        want_value: bool,
    ) -> R<Expr> {
        let (value, cases) = x;
        if !cases.ranges.is_empty() {
            return self.refuse("`switch` with a range case");
        }
        let value = self.expr(value)?;
        let mut blocks = Vec::new();
        let mut table = Vec::new();
        for list in cases.cases.values() {
            let [index] = list.blocks.as_slice() else {
                return self.refuse("`switch` with two cases of the same value");
            };
            let case = &cases.expressions[*index];
            if !matches!(case.lhs, RExpr::BoolConstant(true, _)) {
                return self.refuse("`switch` with a condition on a case");
            }
            let Some(key) = SwitchKey::of(&list.value) else {
                return self.refuse(format!(
                    "`switch` with a case of type {}",
                    list.value.type_name()
                ));
            };
            table.push((key, blocks.len()));
            blocks.push(self.case(&case.rhs, want_value)?);
        }
        let default = match cases.def_case {
            Some(index) => self.case(&cases.expressions[index].rhs, want_value)?,
            None => Block {
                stmts: Vec::new(),
                value: Expr::Unit,
            },
        };
        for block in &blocks {
            self.same_types("a `switch` whose cases", block.ty(), default.ty())?;
        }
        Ok(Expr::Switch {
            value: Box::new(value),
            cases: table,
            blocks,
            default: Box::new(default),
        })
    }

    /// One case's expression as a block (its value dropped in statement position).
    fn case(&mut self, e: &RExpr, want_value: bool) -> R<Block> {
        let block = match e {
            RExpr::Stmt(block) => self.stmt_block(block, want_value)?,
            e => {
                let value = self.expr(e)?;
                if want_value {
                    Block {
                        stmts: Vec::new(),
                        value,
                    }
                } else {
                    Block {
                        stmts: vec![Stmt::Eval(value)],
                        value: Expr::Unit,
                    }
                }
            }
        };
        Ok(block)
    }

    /// A binary operator with a heap value or a character on one side at least; `None` when
    /// the scalar rules apply (after any `Dyn` was checked as the other side's type).
    pub(super) fn mixed(
        &mut self,
        op: BinOp,
        lhs: Expr,
        rhs: Expr,
    ) -> R<Result<Expr, (Expr, Expr)>> {
        let (lt, rt) = (lhs.ty(), rhs.ty());
        let number = |t: Ty| matches!(t, Ty::Int | Ty::Float | Ty::Bool);
        // A `Dyn` against a number is that number's type, or the call goes back to Rhai.
        match (lt, rt) {
            (Ty::Dyn, t) if number(t) => {
                return Ok(Err((Expr::Guard(Box::new(lhs), t), rhs)));
            }
            (t, Ty::Dyn) if number(t) => {
                return Ok(Err((lhs, Expr::Guard(Box::new(rhs), t))));
            }
            _ => {}
        }
        let comparison = op.is_comparison();
        let ret = match (lt, rt) {
            (Ty::Char, Ty::Char) if comparison => {
                return Ok(Ok(Expr::Binary {
                    op,
                    operand: Ty::Char,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                }));
            }
            (Ty::Str, t) | (t, Ty::Str) if op == BinOp::Add && shows(t) => Ty::Str,
            (Ty::Char | Ty::Dyn, Ty::Char | Ty::Dyn) if op == BinOp::Add && lt != rt => Ty::Str,
            (Ty::Char, Ty::Char) if op == BinOp::Add => Ty::Str,
            (Ty::Str | Ty::Dyn, Ty::Str | Ty::Dyn) | (Ty::Char | Ty::Dyn, Ty::Char | Ty::Dyn)
                if comparison =>
            {
                Ty::Bool
            }
            (Ty::Dyn, Ty::Dyn) => Ty::Dyn,
            _ if !lt.is_heap() && !rt.is_heap() && lt != Ty::Char && rt != Ty::Char => {
                return Ok(Err((lhs, rhs)));
            }
            _ => {
                return self.refuse(format!(
                    "uses an operator on {} and {}",
                    ty_name(lt),
                    ty_name(rt)
                ));
            }
        };
        Ok(Ok(Expr::Mixed {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            ret,
        }))
    }
}

/// Whether a value of this type has a text the tier makes (see `native::display`).
fn shows(ty: Ty) -> bool {
    matches!(
        ty,
        Ty::Str | Ty::Char | Ty::Int | Ty::Float | Ty::Bool | Ty::Unit | Ty::Dyn
    )
}

/// What `split`, `contains` and their kin search for: a string or a character.
fn pattern(ty: Ty) -> bool {
    matches!(ty, Ty::Str | Ty::Char | Ty::Dyn)
}

fn ints(args: &[Expr]) -> bool {
    args.iter().all(|a| a.ty() == Ty::Int)
}

fn strs(args: &[Expr]) -> bool {
    args.iter().all(|a| a.ty() == Ty::Str)
}

/// `value` with its reads of `target[key]` made [`Expr::Item`], when it reads the target nowhere
/// else and has no blocks or calls (nothing else may see the target while its element is being
/// replaced); `None` otherwise.
fn updated_item(target: Slot, key: &Expr, value: &Expr) -> Option<Expr> {
    struct Fuse<'k> {
        target: Slot,
        key: &'k Expr,
        loads: usize,
        replaced: usize,
        other: bool,
    }
    impl VisitMut for Fuse<'_> {
        fn expr(&mut self, e: &mut Expr) {
            match e {
                Expr::Load(slot, ty) if *slot == self.target && ty.is_heap() => self.loads += 1,
                Expr::Native {
                    op: Native::Index,
                    args,
                    ..
                } if matches!(args[0], Expr::Load(slot, _) if slot == self.target)
                    && same_key(&args[1], self.key) =>
                {
                    *e = Expr::Item;
                    self.replaced += 1;
                }
                e if e.may_run_code() => self.other = true,
                _ => {}
            }
        }
    }
    let mut value = value.clone();
    let mut fuse = Fuse {
        target,
        key,
        loads: 0,
        replaced: 0,
        other: false,
    };
    value.visit_mut(&mut fuse);
    let only_the_item = fuse.replaced > 0 && fuse.loads == fuse.replaced;
    (only_the_item && !fuse.other).then_some(value)
}

/// Whether two keys are the same value: one variable, or equal constants.
fn same_key(a: &Expr, b: &Expr) -> bool {
    match (a, b) {
        (Expr::Load(x, tx), Expr::Load(y, ty)) => x == y && tx.is_heap() == ty.is_heap(),
        (Expr::Str(x), Expr::Str(y)) => x == y,
        (Expr::Int(x), Expr::Int(y)) => x == y,
        _ => false,
    }
}

/// Whether a block may change the heap locals in `slots`.
struct Writes {
    slots: [Slot; 2],
    found: bool,
}

impl Writes {
    fn loads(&self, e: &Expr) -> bool {
        matches!(e, Expr::Load(slot, ty) if ty.is_heap() && self.slots.contains(slot))
    }
}

impl VisitMut for Writes {
    fn stmt(&mut self, s: &mut Stmt) {
        let written = match s {
            Stmt::StoreHeap(slot, _) | Stmt::SetItem { target: slot, .. } => Some(slot),
            Stmt::ForEach { var, var_ty, .. } if var_ty.is_heap() => Some(var),
            _ => None,
        };
        self.found |= written.is_some_and(|slot| self.slots.contains(slot));
    }

    fn expr(&mut self, e: &mut Expr) {
        self.found |= match e {
            Expr::Native { op, args, .. } if op.changes_receiver() => self.loads(&args[0]),
            Expr::Each {
                op: EachOp::Sort,
                args,
                ..
            } => self.loads(&args[0]),
            Expr::Moved(load) => self.loads(load),
            _ => false,
        };
    }
}

/// Turns each `map[key]` into a read of slot `value`.
struct EntryReads {
    map: Slot,
    key: Slot,
    value: Slot,
    replaced: usize,
}

impl VisitMut for EntryReads {
    fn expr(&mut self, e: &mut Expr) {
        if let Expr::Native {
            op: Native::Index,
            args,
            ..
        } = e
            && let [Expr::Load(map, map_ty), Expr::Load(key, key_ty)] = args.as_slice()
            && (*map, *key) == (self.map, self.key)
            && map_ty.is_heap()
            && key_ty.is_heap()
        {
            *e = Expr::Load(self.value, Ty::Dyn);
            self.replaced += 1;
        }
    }
}
