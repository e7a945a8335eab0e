//! dht-rpc datagrams (dht-rpc 6.27 `lib/io.js`): the request and response layouts.
//!
//! ```text
//! request  03 flags tid:u16 to:ipv4Address [id:32] [token:32] command:uint [target:32] [value:buffer]
//!          flags: 1 id | 2 token | 4 internal | 8 target | 16 value
//! response 13 flags tid:u16 to:ipv4Address [id:32] [token:32] [closerNodes] [error:uint] [value]
//!          flags: 1 id | 2 token | 4 closerNodes | 8 error | 16 value
//! ```
//! Decoding is lenient as in JS (unknown flag bits and trailing bytes are ignored) and strict on
//! lengths. Encoding writes exactly what the JS encoder writes, so our datagrams are byte-equal.

use std::net::SocketAddrV4;

use super::compact::{self, DecodeError, Reader};

/// dht-rpc protocol version (low nibble of the type byte).
pub const VERSION: u8 = 0b11;
/// Type byte of a request (`lib/io.js` REQUEST_ID).
pub const REQUEST_ID: u8 = VERSION;
/// Type byte of a response (`lib/io.js` RESPONSE_ID).
pub const RESPONSE_ID: u8 = (1 << 4) | VERSION;

/// Request flag bits.
mod req_flags {
    pub const ID: u64 = 1;
    pub const TOKEN: u64 = 2;
    pub const INTERNAL: u64 = 4;
    pub const TARGET: u64 = 8;
    pub const VALUE: u64 = 16;
}

/// Response flag bits.
mod res_flags {
    pub const ID: u64 = 1;
    pub const TOKEN: u64 = 2;
    pub const CLOSER_NODES: u64 = 4;
    pub const ERROR: u64 = 8;
    pub const VALUE: u64 = 16;
}

/// A decoded or to-be-encoded dht-rpc request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Transaction id, echoed by the response.
    pub tid: u16,
    /// The address the sender sends to (the receiver's address as the sender knows it).
    pub to: SocketAddrV4,
    /// The sender's node id, present only from persistent senders on their server socket.
    pub id: Option<[u8; 32]>,
    /// A round-trip token previously received from the receiver.
    pub token: Option<[u8; 32]>,
    /// Whether `command` is in dht-rpc's own (internal) command space.
    pub internal: bool,
    /// The command number.
    pub command: u64,
    /// The 32-byte target of the command, if any.
    pub target: Option<[u8; 32]>,
    /// The command's value, if any.
    pub value: Option<&'a [u8]>,
}

/// A decoded or to-be-encoded dht-rpc response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// Transaction id of the request this answers.
    pub tid: u16,
    /// The requester's address as the responder saw it.
    pub to: SocketAddrV4,
    /// The responder's node id (persistent responders, from their server socket).
    pub id: Option<[u8; 32]>,
    /// A fresh round-trip token for the requester's IP.
    pub token: Option<[u8; 32]>,
    /// Nodes closer to the request's target (empty when absent).
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code; 0 is OK and is not written.
    pub error: u64,
    /// The reply value, if any.
    pub value: Option<&'a [u8]>,
}

/// A dht-rpc datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A request (type byte `0x03`).
    Request(Request<'a>),
    /// A response (type byte `0x13`).
    Response(Response<'a>),
}

impl<'a> Message<'a> {
    /// Decodes one datagram.
    pub fn decode(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        match buf.first() {
            Some(&REQUEST_ID) => Request::decode(buf).map(Message::Request),
            Some(&RESPONSE_ID) => Response::decode(buf).map(Message::Response),
            Some(_) => Err(DecodeError::UnknownType),
            None => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// Appends the encoded datagram to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Request(r) => r.encode(out),
            Message::Response(r) => r.encode(out),
        }
    }
}

fn optional_fixed32(r: &mut Reader<'_>, present: bool) -> Result<Option<[u8; 32]>, DecodeError> {
    if present {
        r.fixed().map(Some)
    } else {
        Ok(None)
    }
}

impl Request<'static> {
    /// A client's internal PING to `to` (no id, no token, no target, no value): what a node
    /// answers with its view of the sender's address, as JS `dht.ping()` sends it.
    pub fn ping(tid: u16, to: SocketAddrV4) -> Request<'static> {
        Request {
            tid,
            to,
            id: None,
            token: None,
            internal: true,
            command: crate::commands::PING,
            target: None,
            value: None,
        }
    }
}

impl<'a> Request<'a> {
    /// Decodes a request datagram, type byte included.
    pub fn decode(buf: &'a [u8]) -> Result<Request<'a>, DecodeError> {
        let mut r = Reader::new(buf);
        if r.u8()? != REQUEST_ID {
            return Err(DecodeError::UnknownType);
        }
        let flags = r.uint()?;
        let tid = r.u16()?;
        let to = r.ipv4_address()?;
        let id = optional_fixed32(&mut r, flags & req_flags::ID != 0)?;
        let token = optional_fixed32(&mut r, flags & req_flags::TOKEN != 0)?;
        let internal = flags & req_flags::INTERNAL != 0;
        let command = r.uint()?;
        let target = optional_fixed32(&mut r, flags & req_flags::TARGET != 0)?;
        let value = if flags & req_flags::VALUE != 0 {
            Some(r.buffer()?)
        } else {
            None
        };
        Ok(Request {
            tid,
            to,
            id,
            token,
            internal,
            command,
            target,
            value,
        })
    }

    /// Size of the encoded request in bytes.
    pub fn encoded_len(&self) -> usize {
        10 + self.id.map_or(0, |_| 32)
            + self.token.map_or(0, |_| 32)
            + compact::uint_len(self.command)
            + self.target.map_or(0, |_| 32)
            + self
                .value
                .map_or(0, |v| compact::uint_len(v.len() as u64) + v.len())
    }

    /// Appends the encoded request to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let flags = (self.id.is_some() as u8)
            | (self.token.is_some() as u8) << 1
            | (self.internal as u8) << 2
            | (self.target.is_some() as u8) << 3
            | (self.value.is_some() as u8) << 4;
        out.push(REQUEST_ID);
        out.push(flags);
        out.extend_from_slice(&self.tid.to_le_bytes());
        compact::write_ipv4_address(out, &self.to);
        if let Some(id) = &self.id {
            out.extend_from_slice(id);
        }
        if let Some(token) = &self.token {
            out.extend_from_slice(token);
        }
        compact::write_uint(out, self.command);
        if let Some(target) = &self.target {
            out.extend_from_slice(target);
        }
        if let Some(value) = self.value {
            compact::write_buffer(out, value);
        }
    }

    /// The encoded request datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl<'a> Response<'a> {
    /// Decodes a response datagram, type byte included.
    pub fn decode(buf: &'a [u8]) -> Result<Response<'a>, DecodeError> {
        let mut r = Reader::new(buf);
        if r.u8()? != RESPONSE_ID {
            return Err(DecodeError::UnknownType);
        }
        let flags = r.uint()?;
        let tid = r.u16()?;
        let to = r.ipv4_address()?;
        let id = optional_fixed32(&mut r, flags & res_flags::ID != 0)?;
        let token = optional_fixed32(&mut r, flags & res_flags::TOKEN != 0)?;
        let closer_nodes = if flags & res_flags::CLOSER_NODES != 0 {
            r.ipv4_array()?
        } else {
            Vec::new()
        };
        let error = if flags & res_flags::ERROR != 0 {
            r.uint()?
        } else {
            0
        };
        let value = if flags & res_flags::VALUE != 0 {
            Some(r.buffer()?)
        } else {
            None
        };
        Ok(Response {
            tid,
            to,
            id,
            token,
            closer_nodes,
            error,
            value,
        })
    }

    /// Appends the encoded response to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_response(
            out,
            &ResponseParts {
                tid: self.tid,
                to: self.to,
                id: self.id.as_ref(),
                token: self.token.as_ref(),
                closer_nodes: &self.closer_nodes,
                error: self.error,
                value: self.value,
            },
        );
    }
}

/// The fields of a response, borrowed, for encoding without building a [`Response`].
#[derive(Clone, Copy, Debug)]
pub struct ResponseParts<'a> {
    /// Transaction id.
    pub tid: u16,
    /// The requester's address as seen.
    pub to: SocketAddrV4,
    /// Our node id, when persistent and replying from the server socket.
    pub id: Option<&'a [u8; 32]>,
    /// A token for the requester.
    pub token: Option<&'a [u8; 32]>,
    /// Closer nodes (written only when non-empty, as JS does).
    pub closer_nodes: &'a [SocketAddrV4],
    /// Error code (written only when non-zero).
    pub error: u64,
    /// Value.
    pub value: Option<&'a [u8]>,
}

/// Appends an encoded response to `out`.
pub fn encode_response(out: &mut Vec<u8>, p: &ResponseParts<'_>) {
    let has_closer = !p.closer_nodes.is_empty();
    let flags = (p.id.is_some() as u8)
        | (p.token.is_some() as u8) << 1
        | (has_closer as u8) << 2
        | ((p.error > 0) as u8) << 3
        | (p.value.is_some() as u8) << 4;
    out.push(RESPONSE_ID);
    out.push(flags);
    out.extend_from_slice(&p.tid.to_le_bytes());
    compact::write_ipv4_address(out, &p.to);
    if let Some(id) = p.id {
        out.extend_from_slice(id);
    }
    if let Some(token) = p.token {
        out.extend_from_slice(token);
    }
    if has_closer {
        compact::write_ipv4_array(out, p.closer_nodes);
    }
    if p.error > 0 {
        compact::write_uint(out, p.error);
    }
    if let Some(value) = p.value {
        compact::write_buffer(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{from_hex, to_hex};

    #[test]
    fn ping_vector() {
        // dht.md V3: ephemeral PING request, tid 0x1234, to 127.0.0.2:40000.
        let req = Request {
            tid: 0x1234,
            to: "127.0.0.2:40000".parse().unwrap(),
            id: None,
            token: None,
            internal: true,
            command: 0,
            target: None,
            value: None,
        };
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(to_hex(&out), "030434127f000002409c00");
        assert_eq!(out.len(), req.encoded_len());
        assert_eq!(Request::decode(&out).unwrap(), req);
        assert_eq!(Request::ping(0x1234, req.to), req);
        assert_eq!(req.to_bytes(), out);
    }

    #[test]
    fn trailing_bytes_and_unknown_flags_are_ignored() {
        let mut b = from_hex("030434127f000002409c00").unwrap();
        b[1] |= 0x40;
        b.extend_from_slice(&[1, 2, 3]);
        let req = Request::decode(&b).unwrap();
        assert_eq!(req.tid, 0x1234);
        assert!(req.internal);
    }
}
