//! Signing keys generated at runtime for the development IdP: a fresh key pair per process,
//! published as a public JWK and used to mint JWTs. The same implementation as the gateway's
//! own (`authgate-signing`).

pub use authgate_signing::{KeyError, SigningKey};
