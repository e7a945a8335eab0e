//! Command numbers and error codes on the wire (dht-rpc `lib/commands.js`, `lib/errors.js`).

/// Internal PING.
pub const PING: u64 = 0;
/// Internal PING_NAT: reply to the source host at the port in the value.
pub const PING_NAT: u64 = 1;
/// Internal FIND_NODE.
pub const FIND_NODE: u64 = 2;
/// Internal DOWN_HINT: "this node you told me about is down".
pub const DOWN_HINT: u64 = 3;
/// Internal DELAYED_PING: reply after the delay in the value.
pub const DELAYED_PING: u64 = 4;

/// Response error: unknown command.
pub const ERROR_UNKNOWN_COMMAND: u64 = 1;
/// Response error: the token did not verify.
pub const ERROR_INVALID_TOKEN: u64 = 2;
