//! Pure codecs: no state, no I/O. Each submodule mirrors one JS encoding module.

pub mod compact;
pub mod holepunch;
pub mod hyperdht;
pub mod noise;
pub mod rpc;

pub use compact::DecodeError;
