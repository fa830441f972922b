//! The `hemostat` command line.
fn main() {}
