//! authgate's development fixtures: an in-process OIDC IdP ([`idp`]) that signs for anyone, a
//! stand-in GitHub ([`github`]), an
//! echo upstream ([`echo`]) and the servers behind `authgate demo` ([`demo`]). Used by the demo
//! (authgate's default feature `demo`) and by the tests; never part of a production build.
//! The knobs only tests need (spoiled tokens, outages, failing refreshes...) exist with the
//! `testing` feature only.

pub mod demo;
pub mod echo;
pub mod github;
pub mod idp;
pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod redis;
#[cfg(any(test, feature = "testing"))]
pub mod services;
