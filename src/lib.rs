//! authgate: a reverse-proxy authentication gateway on Pingora.
//!
//! Start with `ARCHITECTURE.md` at the repository's root: the bird's-eye view, the code map
//! (what each module owns and must not know) and the invariants.
//!
//! The request's journey, in the order the modules run it: [`authz::host`] and [`authz::path`]
//! read the host and path → [`authz::routes`] matches the route → [`clients`] names the calling
//! client app → [`identity::credentials`] finds the caller's credential, verified by
//! [`identity::verify`] (keys from [`identity::jwks`]), exchanged by [`identity::apikey`], or a
//! browser session of [`identity::browser`], into one [`identity::credentials::Caller`] →
//! [`authz::permissions`] checks the route's permission, [`authz::abac`] asks the IdP live →
//! [`upstream`] picks the peer → [`headers`] strips and injects identity headers; every refusal
//! leaves through [`responses`], and [`metrics`] counts the outcome. [`proxy`] is where
//! Pingora's phases call these; [`server`] builds the server and reloads the config.
//!
//! The release build aborts on panic, so a panic while serving a request would take every
//! connection down: the modules on the request path deny `unwrap`, `expect` and unchecked
//! indexing (clippy, in CI). Start-up code that may fail loudly says so with an `allow` and a reason.

#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod admin;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod authz;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod budget;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod clients;
pub mod config;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod cors;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod digest;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod headers;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod identity;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod logging;
pub mod lookup;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod metrics;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod origin;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod pattern;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod proxy;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod redirects;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod responses;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod secret;
pub mod server;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod trace;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod trusted_proxies;
#[cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
pub mod upstream;
