//! Loops of the top-level code run compiled too: each is lowered as a function of the variables it
//! uses from outside it, reads them from the script's scope and writes back those it changes. In
//! the program that runs, each loop is wrapped in a node that tries that and else evaluates the
//! loop as written (the node's last input), so Rhai stays the fallback, and the oracle.

use std::{collections::HashSet, sync::Mutex};

use rhai::{
    ASTNode, CustomExpr, Dynamic, Engine, EvalAltResult, EvalContext, Expr, Expression,
    FlowControl, INT, ImmutableString, Namespace, Position, Scope, Stmt, StmtBlock,
};

use super::{
    Bail, Budget, FastTier, closure::Scalar, dynamic, heap_ty, ir::Ty, lower::is_range, scalar,
    scalar_ty,
};
use crate::{locks::lock, stop::StopCheck};

/// The node kind standing for a loop (the engine's handler for it is
/// registered by `Accelerated::install`).
pub(super) const LOOP_NODE: &str = "__mpscript_loop";

/// The name under which a `for` loop whose header Rhai evaluates is given the header's value.
const ITERATED: &str = "for$in";

/// One loop of the top-level code, as the tier lowers it.
pub(crate) struct LoopSource {
    /// What explain mode calls it, unique in the program (`loop at line 12`).
    pub(crate) name: String,
    /// The variables it uses and does not declare, in the order it first mentions them.
    pub(crate) params: Vec<ImmutableString>,
    pub(crate) stmt: Stmt,
    /// Whether it is a `for` loop whose header calls what the tier does not compile
    /// (`for r in pool_map(f, xs)`): Rhai evaluates the header, once, and the loop is lowered
    /// over [`ITERATED`], the value it gave.
    pub(crate) iterated: bool,
}

/// `stmts` with each loop (at the top level, or in blocks, branches, `try` and loops there)
/// wrapped in a node that runs it compiled when it can, and the loops, in the order of their
/// nodes' numbers. `compiles(name, arity)`: whether the tier compiles a call of `name`.
pub(crate) fn wrap_loops(
    stmts: &[Stmt],
    compiles: &dyn Fn(&str, usize) -> bool,
) -> (Vec<Stmt>, Vec<LoopSource>) {
    let mut wrapper = Wrapper {
        loops: Vec::new(),
        visible: Vec::new(),
        compiles,
    };
    let stmts = stmts.iter().map(|s| wrapper.wrap(s)).collect();
    (stmts, wrapper.loops)
}

struct Wrapper<'c> {
    loops: Vec<LoopSource>,
    /// The variables declared before the statement being wrapped, and still in scope there.
    visible: Vec<ImmutableString>,
    compiles: &'c dyn Fn(&str, usize) -> bool,
}

impl Wrapper<'_> {
    fn wrap(&mut self, stmt: &Stmt) -> Stmt {
        match stmt {
            Stmt::Block(block) => Stmt::Block(Box::new(self.block(block, &[]))),
            Stmt::If(flow, pos) => Stmt::If(self.branches(flow), *pos),
            Stmt::TryCatch(flow, pos) => Stmt::TryCatch(self.branches(flow), *pos),
            Stmt::Var(var, ..) => {
                self.visible.push(var.0.name.clone());
                stmt.clone()
            }
            Stmt::While(flow, pos) => {
                let mut flow = flow.clone();
                flow.body = self.block(&flow.body, &[]);
                self.node(stmt, Stmt::While(flow, *pos))
            }
            Stmt::Do(flow, flags, pos) => {
                let mut flow = flow.clone();
                flow.body = self.block(&flow.body, &[]);
                self.node(stmt, Stmt::Do(flow, *flags, *pos))
            }
            Stmt::For(f, pos) => {
                let mut f = f.clone();
                let vars: Vec<_> = [Some(&f.0), f.1.as_ref()].into_iter().flatten().collect();
                let vars: Vec<_> = vars.into_iter().map(|v| v.name.clone()).collect();
                f.2.body = self.block(&f.2.body, &vars);
                self.node(stmt, Stmt::For(f, *pos))
            }
            other => other.clone(),
        }
    }

    fn branches(&mut self, flow: &FlowControl) -> Box<FlowControl> {
        let mut flow = Box::new(flow.clone());
        flow.body = self.block(&flow.body, &[]);
        flow.branch = self.block(&flow.branch, &[]);
        flow
    }

    /// `block` wrapped, in a scope of its own that starts with `vars`.
    fn block(&mut self, block: &StmtBlock, vars: &[ImmutableString]) -> StmtBlock {
        let mark = self.visible.len();
        self.visible.extend_from_slice(vars);
        let stmts: Vec<Stmt> = block.statements().iter().map(|s| self.wrap(s)).collect();
        self.visible.truncate(mark);
        StmtBlock::new_with_span(stmts, block.span())
    }

    /// The node standing for loop `written`, which runs as `running` (its inner loops wrapped)
    /// in Rhai. Its inputs: the loop as it runs, after the header Rhai evaluates, if it does.
    fn node(&mut self, written: &Stmt, running: Stmt) -> Stmt {
        let pos = written.position();
        let number = self.loops.len() as INT;
        let header = match written {
            Stmt::For(f, _) if !is_range(&f.2.expr) && self.calls_rhai(&f.2.expr) => {
                Some(f.2.expr.clone())
            }
            _ => None,
        };
        let lowered = match (written, &header) {
            (Stmt::For(f, pos), Some(_)) => {
                let mut f = f.clone();
                let var = (None, ImmutableString::from(ITERATED), Namespace::NONE, 0);
                f.2.expr = Expr::Variable(Box::new(var), None, *pos);
                Stmt::For(f, *pos)
            }
            _ => written.clone(),
        };
        self.loops.push(LoopSource {
            name: unique_name(pos, &self.loops),
            params: free_variables(&lowered, &self.visible),
            stmt: lowered,
            iterated: header.is_some(),
        });
        let running = StmtBlock::new([running], pos, pos);
        let inputs = header.into_iter().chain([Expr::Stmt(Box::new(running))]);
        let custom = CustomExpr {
            inputs: inputs.collect(),
            tokens: [ImmutableString::from(LOOP_NODE)].into_iter().collect(),
            state: Dynamic::from(number),
            scope_may_be_changed: false,
            self_terminated: true,
        };
        Stmt::Expr(Box::new(Expr::Custom(Box::new(custom), pos)))
    }

    /// Whether `e` calls a function the tier does not compile.
    fn calls_rhai(&self, e: &Expr) -> bool {
        let mut found = false;
        e.walk(&mut Vec::new(), &mut |path: &[ASTNode]| {
            let call = match path.last() {
                Some(ASTNode::Expr(Expr::FnCall(call, _) | Expr::MethodCall(call, _))) => call,
                _ => return true,
            };
            // A method's receiver is not among its arguments.
            let method = matches!(path.last(), Some(ASTNode::Expr(Expr::MethodCall(..))));
            let arity = call.args.len() + usize::from(method);
            found |= call.op_token.is_none() && !(self.compiles)(&call.name, arity);
            !found
        });
        found
    }
}

fn unique_name(pos: Position, loops: &[LoopSource]) -> String {
    let line = pos.line().unwrap_or_default();
    let taken = |name: &str| loops.iter().any(|l| l.name == name);
    let name = format!("loop at line {line}");
    match taken(&name) {
        false => name,
        true => format!(
            "loop at line {line}, column {}",
            pos.position().unwrap_or_default()
        ),
    }
}

/// The unqualified variables `stmt` reads or assigns, in order: those it does not declare, and
/// those it declares that are `visible` before it too (its declaration may come after a use,
/// as in `let b = b * 2`; if every use is of its own, the tier shadows the one passed in).
fn free_variables(stmt: &Stmt, visible: &[ImmutableString]) -> Vec<ImmutableString> {
    let (mut used, mut declared) = (Vec::<ImmutableString>::new(), HashSet::new());
    stmt.walk(&mut Vec::new(), &mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::Variable(var, ..)))
                if var.2.is_empty() && !used.contains(&var.1) =>
            {
                used.push(var.1.clone());
            }
            Some(ASTNode::Stmt(Stmt::Var(var, ..))) => {
                declared.insert(var.0.name.clone());
            }
            Some(ASTNode::Stmt(Stmt::For(f, _))) => {
                declared.insert(f.0.name.clone());
                declared.extend(f.1.as_ref().map(|counter| counter.name.clone()));
            }
            _ => {}
        }
        true
    });
    used.retain(|name| !declared.contains(name) || visible.contains(name));
    used
}

/// Where the engine's loop nodes lead: the program's loops, by node number, and the run's stop
/// check.
pub(crate) struct Loops {
    pub(crate) sites: Vec<LoopSource>,
    pub(crate) stop: StopCheck,
    /// The loops (by node number) explain mode has said a variable keeps in Rhai: said once each.
    pub(crate) explained: Mutex<HashSet<usize>>,
}

impl Loops {
    /// Runs the loop of node `state` (whose inputs are the header Rhai evaluates, if it does,
    /// and the loop as written) compiled if it can, else in Rhai; in verify mode, both, and
    /// compares the variables the loop changed.
    pub(crate) fn run(
        &self,
        tier: &FastTier,
        ctx: &mut EvalContext,
        inputs: &[Expression],
        state: &Dynamic,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let number = state.as_int().map_or(usize::MAX, |n| n as usize);
        let site = self.sites.get(number);
        let Some(site) = site.filter(|s| inputs.len() == 1 + usize::from(s.iterated)) else {
            let reserved = format!("`{LOOP_NODE}` is reserved by mpscript");
            return Err(EvalAltResult::ErrorRuntime(reserved.into(), Position::NONE).into());
        };
        let (name, params) = (&site.name, &site.params);
        let iterated = match site.iterated {
            true => Some(ctx.eval_expression_tree(&inputs[0])?),
            false => None,
        };
        let mut written = Written {
            stmt: inputs[inputs.len() - 1].as_ref(),
            iterated,
        };
        let limits = Budget::of(ctx.engine(), Some(self.stop.clone()), ctx.call_level());
        let verify = tier.mode().verify;
        let engine = ctx.engine();
        let compiled = written.with_iterated(ctx.scope_mut(), |scope| {
            let types = params.iter().map(|p| param_type(p, scope, engine));
            match types.collect::<Result<Vec<_>, String>>() {
                Ok(types) => tier.run_loop(name, params, &types, scope, &limits, !verify),
                Err(why) => Err(why),
            }
        });
        let compiled = match compiled {
            Err(why) => {
                if tier.mode().explain && lock(&self.explained).insert(number) {
                    tier.explain(&format!("not compiled: {name}: {why}"));
                }
                None
            }
            Ok(compiled) => compiled,
        };
        match compiled {
            None => written.eval(ctx),
            Some(Err(stopped)) => Err(stopped),
            Some(Ok(changed)) if !verify => {
                let scope = ctx.scope_mut();
                for (at, value) in changed {
                    if let Some(variable) = scope.get_mut(&params[at]) {
                        *variable = value;
                    }
                }
                Ok(Dynamic::UNIT)
            }
            Some(Ok(changed)) => {
                let values = changed.iter().map(|(_, v)| v.clone()).collect();
                FastTier::verify(name, Ok(Dynamic::from_array(values)), || {
                    let _ = written.eval(ctx)?;
                    let scope = ctx.scope_mut();
                    let value = |at: usize| scope.get(&params[at]).cloned().unwrap_or_default();
                    Ok(Dynamic::from_array(
                        changed.iter().map(|(at, _)| value(*at)).collect(),
                    ))
                })
                .map(|_| Dynamic::UNIT)
            }
        }
    }
}

/// A loop as written, for Rhai to run, and the value of its header if Rhai evaluated it.
struct Written<'a> {
    stmt: &'a Expr,
    iterated: Option<Dynamic>,
}

impl Written<'_> {
    /// `run` with the header's value in `scope` as [`ITERATED`], if there is one; it is taken
    /// out again after.
    fn with_iterated<T>(&mut self, scope: &mut Scope, run: impl FnOnce(&mut Scope) -> T) -> T {
        let Some(value) = self.iterated.take() else {
            return run(scope);
        };
        scope.push_dynamic(ITERATED, value);
        let result = run(scope);
        self.iterated = scope.get_mut(ITERATED).map(std::mem::take);
        scope.pop();
        result
    }

    /// Runs the loop in Rhai, over the header's value if Rhai evaluated it already (the header
    /// is not evaluated twice: it may have done anything, `pool_map` say).
    fn eval(&mut self, ctx: &mut EvalContext) -> Result<Dynamic, Box<EvalAltResult>> {
        let (Some(value), Expr::Stmt(block)) = (self.iterated.take(), self.stmt) else {
            return ctx.eval_expression_tree(&self.stmt.into());
        };
        let mut block = block.clone();
        if let Some(Stmt::For(f, pos)) = block.statements_mut().first_mut() {
            f.2.expr = Expr::DynamicConstant(Box::new(value), *pos);
        }
        let stmt = Expr::Stmt(block);
        ctx.eval_expression_tree(&(&stmt).into())
    }
}

/// The variables a loop changed, by place among its parameters, with their new values.
type Changed = Vec<(usize, Dynamic)>;

impl FastTier {
    /// Runs loop `name` compiled on the variables `params` of `scope`, if it can; `None` means:
    /// run it in Rhai, and `Err` says why a variable keeps it there. Answers the variables it
    /// changed (by place in `params`) with their new values, leaving `scope` as it was. `lend`:
    /// a variable the loop only reads is lent to it (and put back), not copied.
    fn run_loop(
        &self,
        name: &str,
        params: &[ImmutableString],
        typed: &[(Scalar, Ty)],
        scope: &mut Scope,
        limits: &Budget,
        lend: bool,
    ) -> Result<Option<Result<Changed, Box<EvalAltResult>>>, String> {
        if !self.is_enabled() || limits.max_depth == 0 {
            return Ok(None);
        }
        let (mut scalars, types): (Vec<Scalar>, Vec<Ty>) = typed.iter().copied().unzip();
        let Some(program) = self.program(name, &types) else {
            return Ok(None);
        };
        let changed = program.changed_params();
        let constant = |p: &ImmutableString| scope.is_constant(p) == Some(true);
        if let Some((p, _)) = params.iter().zip(changed).find(|(p, c)| **c && constant(p)) {
            return Err(format!("changes the constant `{p}`")); // Rhai raises the error
        }
        // The loop changes a copy of its variable: if it hands the run back to Rhai midway, Rhai
        // runs it on the variable as it was.
        let mut heap = Vec::new();
        let mut lent = Vec::new();
        for (at, _) in types.iter().enumerate().filter(|(_, t)| t.is_heap()) {
            let borrow = lend && !changed[at];
            let taken = scope
                .get_mut(&params[at])
                .filter(|_| borrow)
                .map(std::mem::take);
            lent.push(taken.is_some());
            heap.push(taken.unwrap_or_else(|| scope.get(&params[at]).cloned().unwrap_or_default()));
        }
        let result = program.call(&mut scalars, &mut heap, Vec::new(), limits);
        let mut outputs = Vec::new();
        let mut heap = heap.into_iter().zip(lent);
        for (at, ty) in types.iter().enumerate() {
            if ty.is_heap() {
                let (value, lent) = heap.next().unwrap_or_default();
                match scope.get_mut(&params[at]) {
                    Some(variable) if lent => *variable = value,
                    _ if changed[at] => outputs.push((at, settled(value))),
                    _ => {}
                }
            } else if changed[at] {
                outputs.push((at, dynamic(scalars[at])));
            }
        }
        Ok(match result {
            Ok(_) => Some(Ok(outputs)),
            Err(Bail::Stop(error)) => Some(Err(error)),
            Err(Bail::Fallback | Bail::Escape(_)) => None,
        })
    }
}

/// `value` as Rhai's own (a map a loop made a hash table is Rhai's map again).
fn settled(mut value: Dynamic) -> Dynamic {
    super::native::settle(&mut value);
    value
}

/// The value of variable `name` of `scope` as a compiled loop takes it, and its type; else why
/// not.
fn param_type(name: &str, scope: &Scope, engine: &Engine) -> Result<(Scalar, Ty), String> {
    let what = match name {
        ITERATED => "what the header gives".to_string(),
        _ => format!("`{name}`"),
    };
    let Some(value) = scope.get(name) else {
        return Err(format!(
            "uses {what}, which is not a variable of the script"
        ));
    };
    // A variable a closure captured is shared with it: the closure must see each change.
    if value.is_shared() {
        return Err(format!("uses {what}, which a closure captured"));
    }
    match scalar(value) {
        Some(s) => Ok((s, scalar_ty(&s))),
        None => match heap_ty(value) {
            Some(ty) => Ok((Scalar::Unit, ty)),
            None => Err(format!(
                "uses {what}, a {}",
                engine.map_type_name(value.type_name())
            )),
        },
    }
}
