//! auth-service: the platform's registry of mini programs, the consent flow, auth codes and
//! token issuance, served over gRPC.
#![forbid(unsafe_code)]

pub mod apps;
pub mod clock;
pub mod config;
pub mod consent;
pub mod credentials;
pub mod error;
pub mod keys;
pub mod revocations;
pub mod secrets;
pub mod store;
pub mod sweeper;
pub mod tokens;
