//! Authorization: which route a request is for, and whether the caller may use it.

pub mod abac;
pub mod grants;
pub mod host;
pub mod overrides;
pub mod path;
pub mod permissions;
pub mod routes;
