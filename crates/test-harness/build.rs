//! Decides, when the tests are built, what the PostgreSQL half of the suite does:
//!
//! - `TRIBUTARY_TEST_DATABASE_URL` set: the PostgreSQL tests run;
//! - unset and `CI` set: they run too, and fail at once saying the variable is missing;
//! - neither: they are compiled `#[ignore]`d, so `cargo test` lists each as `ignored` and every
//!   test binary's summary counts them (`... 42 ignored`), instead of passing without running.
//!
//! libtest can only ignore a test statically, hence a build script; cargo rebuilds the test
//! targets (and only those: this crate is a test-only dependency) when either variable changes.

use std::env;

/// The variable naming the PostgreSQL server the tests create databases on.
const DATABASE_URL_VAR: &str = "TRIBUTARY_TEST_DATABASE_URL";

fn main() {
    println!("cargo::rerun-if-env-changed={DATABASE_URL_VAR}");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-check-cfg=cfg(postgres_tests_ignored)");
    let configured = env::var(DATABASE_URL_VAR).is_ok_and(|url| !url.is_empty());
    let ci = env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false" && ci != "0");
    if !configured && !ci {
        println!("cargo::rustc-cfg=postgres_tests_ignored");
    }
}
