//! Attacks on paths: see the module docs of the attack suite.
