//! `log_debug(msg)`, `log_info(msg)`, `log_warn(msg)`, `log_error(msg)`: a record with the time,
//! level, pid, script and line, made in whatever process calls them and written by the main one.

use std::{sync::Arc, time::SystemTime};

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

use super::{Ctx, method};
use crate::logging::{Level, LogRecord};

pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    for level in [Level::Debug, Level::Info, Level::Warn, Level::Error] {
        let c = ctx.clone();
        let name = format!("log_{}", level.name());
        method(
            engine,
            &name,
            move |context: NativeCallContext, message: Dynamic| c.log(level, &context, &message),
        );
    }
}

impl Ctx {
    fn log(
        &self,
        level: Level,
        context: &NativeCallContext,
        message: &Dynamic,
    ) -> Result<(), Box<EvalAltResult>> {
        if level < self.log_level {
            return Ok(());
        }
        let record = LogRecord {
            time: SystemTime::now(),
            level,
            pid: std::process::id(),
            host: self.host.clone(),
            file: self.script.clone(),
            line: context.call_position().line().unwrap_or(0) as u32,
            message: message.to_string(),
        };
        self.backend.log(record).map_err(|e| self.script_error(e))
    }
}
