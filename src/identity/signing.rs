//! The gateway's signing key for identity assertions: an operator's PKCS#8 key file or a key
//! generated at start. The implementation is the `authgate-signing` crate, which the
//! development IdP shares (it may not depend on the gateway, nor the gateway on it).

pub use authgate_signing::{KeyError, SigningKey};
