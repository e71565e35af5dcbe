//! Attacks on namespace: see the module docs of the attack suite.
