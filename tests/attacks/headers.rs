//! Attacks on headers: see the module docs of the attack suite.
