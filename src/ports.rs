//! The connector's view of its host: the guest SDK's port traits (`connector_sdk::ports`).

pub use connector_sdk::Ports;
pub use connector_sdk::ports::*;
