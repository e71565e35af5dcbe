//! The attack suite: the gateway tried as an attacker would, over real loopback sockets,
//! asserting on what the upstream received (the echo upstream answers with the request it
//! got), not only on the status. One module per part of the trust boundary.

#[path = "../common/mod.rs"]
mod common;

mod cross_site;
mod headers;
mod identity;
mod live;
mod login;
mod namespace;
mod paths;
