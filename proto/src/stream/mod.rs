//! UDX: reliable, congestion-controlled streams over UDP, byte-compatible with libudx (the C
//! library behind Node.js `udx-native`). See connect.md §3; the libudx sources are the truth.
//!
//! This module owns everything below the secret-stream layer: the packet codec ([`packet`]).
pub mod packet;
