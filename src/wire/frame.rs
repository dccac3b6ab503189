//! Length-prefixed frames: a u32 little-endian length, then one postcard message.

use std::io::{self, BufReader, ErrorKind, Read};

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// The largest frame accepted, checked before anything of that size is allocated.
pub(crate) const MAX_FRAME: usize = 512 << 20;
/// The largest value a script may send: a frame, less room for the message around it.
pub(crate) const MAX_VALUE: usize = MAX_FRAME - (MAX_FRAME >> 6);

/// The error for a message of `len` bytes, which no process will accept.
pub(crate) fn over_the_frame_limit(len: usize) -> Error {
    Error::InvalidArgument(format!(
        "a message of {:.1} MiB exceeds the frame limit of {} MiB between processes",
        len as f64 / (1 << 20) as f64,
        MAX_FRAME >> 20
    ))
}

/// How far ahead of the received bytes a frame buffer may grow.
const READ_STEP: usize = 1 << 20;

/// Serializes `msg` into one buffer that starts with its length prefix.
#[cfg(test)]
pub(crate) fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    append_frame(msg, &mut buf)?;
    Ok(buf)
}

/// Appends `msg` as one frame to `buf`; on error `buf` is left as it was.
pub(crate) fn append_frame<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> Result<(), Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = postcard::to_extend(msg, Appender(buf)) {
        buf.truncate(start);
        return Err(encode_error(&e));
    }
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(over_the_frame_limit(len));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Lets postcard write straight into a borrowed buffer.
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

fn encode_error(e: &postcard::Error) -> Error {
    if crate::value::depth_exceeded() {
        Error::TooDeep {
            limit: crate::value::MAX_DEPTH,
        }
    } else {
        Error::InvalidArgument(format!("cannot encode message: {e}"))
    }
}

/// Reads frames from a byte stream, reusing one buffer.
pub(crate) struct FrameReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    peer: String,
    limit: usize,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(inner: R, peer: impl Into<String>) -> Self {
        FrameReader::with_limit(inner, peer, MAX_FRAME)
    }

    /// A reader that refuses frames longer than `limit` (e.g. a stranger's hello).
    pub(crate) fn with_limit(inner: R, peer: impl Into<String>, limit: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::new(),
            peer: peer.into(),
            limit,
        }
    }

    /// Reads the next message. A clean end of stream between frames is [`Error::Disconnected`];
    /// anything malformed is [`Error::Protocol`].
    pub(crate) fn read<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let mut len = [0u8; 4];
        match read_exact_or_eof(&mut self.inner, &mut len) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Disconnected {
                    peer: self.peer.clone(),
                });
            }
            Err(e) => return Err(io_error(e, &self.peer)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > self.limit {
            return Err(self.protocol(format!(
                "frame length {len} exceeds the {}-byte limit",
                self.limit
            )));
        }
        self.fill(len)?;
        postcard::from_bytes(&self.buf[..len]).map_err(|e| {
            if crate::value::depth_exceeded() {
                self.protocol(format!(
                    "value nested deeper than {} levels",
                    crate::value::MAX_DEPTH
                ))
            } else {
                self.protocol(format!("undecodable message: {e}"))
            }
        })
    }

    /// Reads `len` bytes into the front of the buffer. The buffer keeps its high-water size (no
    /// zeroing per frame) and grows at most [`READ_STEP`] ahead of the bytes that have arrived,
    /// never to a claimed length up front.
    fn fill(&mut self, len: usize) -> Result<(), Error> {
        let mut filled = 0;
        while filled < len {
            let upto = len.min(filled + READ_STEP);
            if self.buf.len() < upto {
                self.buf.resize(upto, 0);
            }
            match read_exact_or_eof(&mut self.inner, &mut self.buf[filled..upto]) {
                Ok(true) => filled = upto,
                Ok(false) => {
                    let detail = format!("truncated frame ({filled} of {len} bytes)");
                    return Err(self.protocol(detail));
                }
                Err(e) => return Err(io_error(e, &self.peer)),
            }
        }
        Ok(())
    }

    fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            peer: self.peer.clone(),
            detail,
        }
    }
}

/// Fills `buf`; `Ok(false)` if the stream ended before the first byte, an error if it ended inside.
fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn io_error(e: io::Error, peer: &str) -> Error {
    match e.kind() {
        ErrorKind::UnexpectedEof => Error::Protocol {
            peer: peer.into(),
            detail: "truncated frame".into(),
        },
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            Error::Disconnected { peer: peer.into() }
        }
        _ => Error::io(format!("talking to {peer}"), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn reader(bytes: Vec<u8>) -> FrameReader<io::Cursor<Vec<u8>>> {
        FrameReader::new(io::Cursor::new(bytes), "test peer")
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut bytes = Vec::new();
        bytes.extend(encode_frame(&Value::Str("one".into())).unwrap());
        bytes.extend(encode_frame(&Value::IntArray(vec![1, 2, 3])).unwrap());
        let mut r = reader(bytes);
        assert_eq!(r.read::<Value>().unwrap(), Value::Str("one".into()));
        assert_eq!(r.read::<Value>().unwrap(), Value::IntArray(vec![1, 2, 3]));
        assert!(r.read::<Value>().unwrap_err().is_disconnected());
    }

    #[test]
    fn a_truncated_frame_is_a_protocol_error() {
        let mut bytes = encode_frame(&Value::Str("hello".into())).unwrap();
        bytes.truncate(bytes.len() - 2);
        let err = reader(bytes).read::<Value>().unwrap_err();
        assert!(err.to_string().contains("truncated frame"), "{err}");
        let err = reader(vec![5, 0]).read::<Value>().unwrap_err();
        assert!(err.to_string().contains("truncated frame"), "{err}");
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_le_bytes().to_vec();
        let err = reader(bytes).read::<Value>().unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        assert!(err.to_string().contains("test peer"), "{err}");
    }

    #[test]
    fn garbage_and_unknown_tags_are_protocol_errors() {
        let bytes = vec![2, 0, 0, 0, 200, 1];
        let err = reader(bytes).read::<Value>().unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
    }

    #[test]
    fn hostile_nesting_is_reported_as_such() {
        let array = postcard::to_stdvec(&Value::Array(Vec::new())).unwrap()[0];
        let mut payload = Vec::new();
        for _ in 0..10_000 {
            payload.extend_from_slice(&[array, 1]);
        }
        payload.push(0);
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend(payload);
        let err = reader(bytes).read::<Value>().unwrap_err();
        assert!(err.to_string().contains("nested deeper than 128"), "{err}");
    }
}
