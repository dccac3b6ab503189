//! `pool_map(f, items, options)`: Python's `Pool.map` over the runtime's warm worker pool.

use std::{
    any::TypeId,
    ops::{Range, RangeInclusive},
    sync::Arc,
};

use rhai::{Dynamic, Engine, EvalAltResult, INT, Map};

use super::{Ctx, function_arg, invalid};
use crate::{
    Value, profile,
    wire::{Items, MapOptions, Op},
};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    for arity in [2, 3] {
        let ctx = ctx.clone();
        engine.register_raw_fn(
            "pool_map",
            vec![TypeId::of::<Dynamic>(); arity],
            move |_, args| {
                let f = function_arg(args[0], "pool_map")?;
                let items = pool_items(args[1])?;
                let options = match args.get(2) {
                    Some(options) => map_options(options)?,
                    None => MapOptions::default(),
                };
                let at = profile::here("pool_map");
                let _frame = profile::BuiltinCall::enter("pool_map");
                ctx.ask(Op::PoolMap {
                    f,
                    items,
                    options,
                    at,
                })
                .map(|v: Value| ctx.to_dynamic(v))
            },
        );
    }
}

/// An array, or an integer range that is never materialised.
pub(super) fn pool_items(value: &Dynamic) -> Result<Items, Box<EvalAltResult>> {
    if let Some(r) = value.read_lock::<Range<INT>>() {
        return Ok(Items::Range {
            start: r.start,
            end: r.end.max(r.start),
        });
    }
    if let Some(r) = value.read_lock::<RangeInclusive<INT>>() {
        let end = r
            .end()
            .checked_add(1)
            .ok_or_else(|| invalid("pool_map: range end is too large"))?;
        return Ok(Items::Range {
            start: *r.start(),
            end: end.max(*r.start()),
        });
    }
    if let Some(items) = value.read_lock::<rhai::Array>() {
        return Value::from_elements(&items)
            .map(Items::Values)
            .map_err(|e| invalid(format!("pool_map items: {e}")));
    }
    Err(invalid(format!(
        "pool_map expects an array or a range of items, got {}",
        value.type_name()
    )))
}

pub(super) fn map_options(value: &Dynamic) -> Result<MapOptions, Box<EvalAltResult>> {
    let Some(map) = value.read_lock::<Map>() else {
        return Err(invalid(format!(
            "pool_map options must be an object map like #{{workers: 4}}, got {}",
            value.type_name()
        )));
    };
    let mut options = MapOptions::default();
    for (key, v) in map.iter() {
        match key.as_str() {
            "workers" => options.workers = Some(count(v, key, 1)?),
            "chunk_size" => options.chunk_size = Some(count(v, key, 1)?),
            "retries" => options.retries = count(v, key, 0)? as u32,
            "timeout" => options.timeout = Some(duration(v)?),
            "progress" => options.progress = Some(flag(v, key)?),
            "spread" => options.spread = flag(v, key)?,
            other => {
                return Err(invalid(format!(
                    "pool_map: unknown option `{other}` \
                     (known: workers, chunk_size, retries, timeout, progress, spread)"
                )));
            }
        }
    }
    Ok(options)
}

fn count(value: &Dynamic, key: &str, min: INT) -> Result<usize, Box<EvalAltResult>> {
    match value.as_int() {
        Ok(n) if n >= min => Ok(n as usize),
        _ => Err(invalid(format!(
            "pool_map option `{key}` must be an integer of {min} or more, got {value}"
        ))),
    }
}

fn flag(value: &Dynamic, key: &str) -> Result<bool, Box<EvalAltResult>> {
    value.as_bool().map_err(|_| {
        invalid(format!(
            "pool_map option `{key}` must be true or false, got {value}"
        ))
    })
}

fn duration(value: &Dynamic) -> Result<f64, Box<EvalAltResult>> {
    let secs = value
        .as_float()
        .or_else(|_| value.as_int().map(|i| i as f64));
    match secs {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        _ => Err(invalid(format!(
            "pool_map option `timeout` must be a number of seconds above zero, got {value}"
        ))),
    }
}
