//! The `fota` command line.
fn main() {}
