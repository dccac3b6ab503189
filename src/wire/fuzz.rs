//! Property-based fuzzing of the decoders: whatever bytes arrive, reading a frame ends in a value or a
//! `Protocol`/`Disconnected` error, never a panic, a hang or an outsized allocation. CI runs the
//! default case count; `PROPTEST_CASES=200000 cargo test --release fuzz` runs it longer.

use std::io::Cursor;

use proptest::prelude::*;

use super::{FrameReader, FromWorker, ItemFailure, Items, Op, SyncAction, ToWorker, encode_frame};
use crate::{
    Error, RemoteError, Value,
    value::{FnValue, HandleKind, ProcessHandle},
};

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Unit),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        any::<char>().prop_map(Value::Char),
        ".{0,40}".prop_map(|s| Value::Str(s.into())),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Blob),
        proptest::collection::vec(any::<i64>(), 0..32).prop_map(Value::IntArray),
        proptest::collection::vec(any::<f64>(), 0..32).prop_map(Value::FloatArray),
        proptest::collection::vec(any::<bool>(), 0..32).prop_map(Value::BoolArray),
        (any::<u64>(), any::<bool>()).prop_map(|(id, bounded)| Value::Queue { id, bounded }),
        (any::<u64>(), any::<u32>()).prop_map(|(id, pid)| Value::Process { id, pid }),
        (any::<u64>(), any::<u32>()).prop_map(|(id, pid)| Value::Supervisor { id, pid }),
        (handle_kind(), any::<u64>()).prop_map(|(kind, id)| Value::Handle { kind, id }),
    ];
    leaf.prop_recursive(6, 128, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((".{0,12}", inner.clone()), 0..8).prop_map(|entries| {
                Value::Map(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.as_str().into(), v))
                        .collect(),
                )
            }),
            ("[a-z_$0-9]{1,16}", proptest::collection::vec(inner, 0..4))
                .prop_map(|(name, curry)| Value::Fn(Box::new(FnValue { name, curry }))),
        ]
    })
}

fn handle_kind() -> impl Strategy<Value = HandleKind> {
    prop_oneof![
        Just(HandleKind::Future),
        Just(HandleKind::Lock),
        Just(HandleKind::RLock),
        Just(HandleKind::Condition),
        Just(HandleKind::Semaphore),
        Just(HandleKind::Event),
        Just(HandleKind::Barrier),
    ]
}

/// The actor and coordination operations a worker sends.
fn actor_op() -> impl Strategy<Value = Op> {
    let timeout = proptest::option::of(any::<f64>());
    prop_oneof![
        (any::<u64>(), value()).prop_map(|(to, value)| Op::Send { to, value }),
        timeout.clone().prop_map(|timeout| Op::Recv { timeout }),
        (".{0,12}", any::<u64>()).prop_map(|(name, process)| Op::Register { name, process }),
        (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(process, link, on)| Op::Watch {
            process,
            link,
            on
        }),
        (handle_kind(), any::<u64>()).prop_map(|(kind, size)| Op::NewSync { kind, size }),
        (any::<u64>(), timeout.clone()).prop_map(|(id, timeout)| Op::Sync {
            id,
            action: SyncAction::Acquire { timeout },
        }),
        (any::<u64>(), timeout.clone(), any::<bool>()).prop_map(|(future, timeout, take)| {
            Op::Await {
                future,
                timeout,
                take,
            }
        }),
        (proptest::collection::vec(any::<u64>(), 0..8), timeout)
            .prop_map(|(futures, timeout)| Op::WaitAny { futures, timeout }),
    ]
}

fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        (any::<u64>(), any::<u32>(), value()).prop_map(|(job, chunk, v)| ToWorker::Map {
            job,
            chunk,
            setup: None,
            items: Items::Values(v),
        }),
        (any::<i64>(), any::<i64>()).prop_map(|(start, end)| ToWorker::Map {
            job: 1,
            chunk: 0,
            setup: None,
            items: Items::Range { start, end },
        }),
        (any::<u64>(), value()).prop_map(|(seq, v)| ToWorker::Reply {
            seq,
            result: Ok(super::Reply::Value(v)),
        }),
        Just(ToWorker::Shutdown),
        (any::<u64>(), any::<u64>(), any::<u32>(), value()).prop_map(|(call, id, pid, v)| {
            ToWorker::Call {
                call,
                f: FnValue {
                    name: "f".into(),
                    curry: vec![v],
                },
                args: Vec::new(),
                parent: ProcessHandle::new(id, pid),
                at: None,
            }
        }),
    ]
}

fn from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        (any::<u64>(), actor_op()).prop_map(|(seq, op)| FromWorker::Request { seq, op }),
        (any::<u64>(), value()).prop_map(|(seq, v)| FromWorker::Request {
            seq,
            op: Op::Put {
                queue: 1,
                value: v,
                timeout: None,
            },
        }),
        (any::<u32>(), ".{0,30}").prop_map(|(offset, message)| FromWorker::MapDone {
            job: 1,
            chunk: 2,
            result: Err(ItemFailure {
                offset,
                error: RemoteError {
                    message,
                    pid: 1,
                    host: String::new(),
                    line: 2,
                    column: 3,
                    function: "f".into(),
                },
                timed_out: false,
            }),
        }),
        (".{0,30}", any::<u32>()).prop_map(|(token, pid)| FromWorker::Hello {
            token,
            worker: 1,
            pid,
        }),
    ]
}

/// Reads one frame of `T` from `bytes`; a failure must be one of the two stream errors.
fn read_one<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, TestCaseError> {
    match FrameReader::new(Cursor::new(bytes), "fuzz").read::<T>() {
        Ok(v) => Ok(Some(v)),
        Err(Error::Protocol { .. } | Error::Disconnected { .. }) => Ok(None),
        Err(other) => Err(TestCaseError::fail(format!(
            "unexpected error kind: {other}"
        ))),
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_one::<ToWorker>(&bytes)?;
        read_one::<FromWorker>(&bytes)?;
        read_one::<Value>(&bytes)?;
        // The same bytes as a correctly framed payload reach the message decoders proper.
        let bytes = framed(&bytes);
        read_one::<ToWorker>(&bytes)?;
        read_one::<FromWorker>(&bytes)?;
        read_one::<Value>(&bytes)?;
    }

    #[test]
    fn valid_messages_decode_to_what_was_sent(to in to_worker(), from in from_worker(), v in value()) {
        for frame in [encode_frame(&to), encode_frame(&from), encode_frame(&v)] {
            let frame = frame.unwrap();
            prop_assert!(frame.len() >= 4);
        }
        // Floats may be NaN, so compare re-encoded bytes rather than values.
        let back: ToWorker = read_one(&encode_frame(&to).unwrap())?.expect("decodes");
        prop_assert_eq!(encode_frame(&back).unwrap(), encode_frame(&to).unwrap());
        let back: FromWorker = read_one(&encode_frame(&from).unwrap())?.expect("decodes");
        prop_assert_eq!(encode_frame(&back).unwrap(), encode_frame(&from).unwrap());
        let back: Value = read_one(&encode_frame(&v).unwrap())?.expect("decodes");
        prop_assert_eq!(encode_frame(&back).unwrap(), encode_frame(&v).unwrap());
    }

    #[test]
    fn mutated_frames_never_panic(
        msg in to_worker(),
        from in from_worker(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        for mut frame in [encode_frame(&msg).unwrap(), encode_frame(&from).unwrap()] {
            let len = frame.len();
            for (at, byte) in &flips {
                frame[at % len] ^= byte;
            }
            frame.truncate(cut % (len + 1));
            read_one::<ToWorker>(&frame)?;
            read_one::<FromWorker>(&frame)?;
        }
    }
}
