//! Attacks on live: see the module docs of the attack suite.
