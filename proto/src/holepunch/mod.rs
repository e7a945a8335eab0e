//! Holepunching (hyperdht `lib/holepuncher.js`, `lib/nat.js`, `lib/secure-payload.js`): sealed
//! payloads and tokens, NAT classification, and the punch strategies with their timing.

pub mod addr;
pub mod nat;
pub mod puncher;
pub mod secure;

pub use secure::SecurePayload;
