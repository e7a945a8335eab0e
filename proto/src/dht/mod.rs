//! hyperdht on top of dht-rpc: signed records, their storage on persistent nodes, and the relay
//! of handshakes and holepunch messages (hyperdht 6.34 `lib/persistent.js`, `lib/router.js`).

pub mod cache;
pub mod keys;
pub mod router;
pub mod store;

pub use keys::{command, KeyPair};
pub use router::{Forward, RelayAction, Router};
pub use store::{Answer, Store, StoreLimits, StoreRequest};
