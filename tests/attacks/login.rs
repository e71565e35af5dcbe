//! Attacks on login: see the module docs of the attack suite.
