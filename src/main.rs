//! The `k3rs` binary. (CLI being written.)
fn main() {
    println!("{}", k3rs::version::git_version());
}
