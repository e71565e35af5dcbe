//! authgate: a reverse-proxy authentication gateway on Pingora.
//!
//! The request's journey, in the order the modules run it:
//! [`authz::path`] normalises the path → [`authz::routes`] matches the route →
//! [`clients`] names the calling client app → [`identity::credentials`] finds the
//! caller's token → [`identity::verify`] checks it against the IdP's keys
//! ([`identity::jwks`]) into a [`identity::Principal`] → [`authz::permissions`]
//! checks the route's permission → [`upstream`] picks the peer → [`headers`] strips
//! and injects identity headers; every refusal leaves through [`responses`], and
//! [`metrics`] counts the outcome. [`proxy`] is where Pingora's phases call these.

pub mod admin;
pub mod authz;
pub mod clients;
pub mod config;
pub mod cors;
pub mod demo;
pub mod digest;
pub mod headers;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod redirects;
pub mod responses;
pub mod secret;
pub mod server;
pub mod upstream;
