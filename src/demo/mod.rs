//! Demo and test fixtures that ship in the binary: an in-process development IdP,
//! an echo upstream, and the runtime-generated signing keys behind them.

pub mod echo;
pub mod idp;
pub mod keys;
pub mod run;

pub use run::run;
