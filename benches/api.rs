//! API benchmark (being written).
fn main() {}
