//! `shared_map()`: Python's `Manager().dict()`, a map of any sendable values living in the main
//! process like queues do, with atomic counters (`add`) and compare-and-swap.

use crate::locks::lock;
use std::{collections::BTreeMap, sync::Arc};

use super::Inner;
use crate::{
    Error, Value,
    wire::{MapAction, Reply},
};

/// One shared map.
pub(crate) type SharedMap = Arc<std::sync::Mutex<BTreeMap<String, Value>>>;

impl Inner {
    pub(super) fn new_shared_map(&self) -> Reply {
        let id = self.id();
        lock(&self.shared_maps).insert(id, SharedMap::default());
        Reply::Id(id)
    }

    pub(super) fn shared_map(&self, id: u64, action: MapAction) -> Result<Reply, Error> {
        let map = lock(&self.shared_maps)
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no shared map with id {id}")))?;
        let mut map = lock(&map);
        let got = |v: Option<&Value>| Reply::Value(v.cloned().unwrap_or(Value::Unit));
        Ok(match action {
            MapAction::Get(key) => got(map.get(&key)),
            MapAction::Set(key, value) => {
                map.insert(key, value);
                Reply::Unit
            }
            MapAction::Remove(key) => Reply::Value(map.remove(&key).unwrap_or(Value::Unit)),
            MapAction::Contains(key) => Reply::Bool(map.contains_key(&key)),
            MapAction::Keys => Reply::Value(Value::Array(
                map.keys().map(|k| Value::Str(k.as_str().into())).collect(),
            )),
            MapAction::Len => Reply::Len(map.len() as u64),
            MapAction::ToMap => Reply::Value(Value::Map(
                map.iter()
                    .map(|(k, v)| (k.as_str().into(), v.clone()))
                    .collect(),
            )),
            MapAction::Add(key, delta) => {
                let sum = add(map.get(&key).unwrap_or(&Value::Int(0)), &delta, &key)?;
                map.insert(key, sum.clone());
                Reply::Value(sum)
            }
            MapAction::Cas(key, expected, new) => {
                let current = map.get(&key).unwrap_or(&Value::Unit);
                let swap = *current == expected;
                if swap {
                    map.insert(key, new);
                }
                Reply::Bool(swap)
            }
        })
    }
}

/// `a + b` for numbers: ints stay ints (an overflow is an error), a float makes a float.
fn add(a: &Value, b: &Value, key: &str) -> Result<Value, Error> {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => a.checked_add(*b).map(Value::Int).ok_or_else(|| {
            Error::InvalidArgument(format!("Addition overflow: {a} + {b} (key {key:?})"))
        }),
        (Value::Int(a), Value::Float(b)) => Ok(Value::Float(*a as f64 + b)),
        (Value::Float(a), Value::Int(b)) => Ok(Value::Float(a + *b as f64)),
        (Value::Float(a), Value::Float(b)) => Ok(Value::Float(a + b)),
        _ => Err(Error::InvalidArgument(format!(
            "add: the value of key {key:?} and the amount must be numbers"
        ))),
    }
}
