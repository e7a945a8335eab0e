//! dht-rpc's transport machinery (dht-rpc `lib/io.js`, `nat-sampler`, `lib/health.js`): round-trip
//! tokens, the send congestion window, the NAT sampler and network health. Each piece is a small
//! pure machine driven by the node.

mod congestion;
mod health;
mod nat;
mod tokens;

pub use congestion::CongestionWindow;
pub use health::{Health, HealthState};
pub use nat::NatSampler;
pub use tokens::Tokens;
