//! Every probe and validation row of this project as a libtest test: `cargo test --test eval`.
//! Copy this file (and `harness = false` in Cargo.toml) into any project to get the same.

fn main() {
    vlmtest::harness::run_from_env().exit();
}
