//! `shoal`: the one binary. Wiring only: `shoal daemon`, the hidden `shoal shim`, and the CLI verbs.
fn main() {}
