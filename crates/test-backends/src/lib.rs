//! Marks the PostgreSQL half of the test suite (see `build.rs`): [`postgres_test!`] wraps test
//! items, which are reported `ignored` when no PostgreSQL is configured outside CI, and run
//! (failing loudly without a database) otherwise.

/// Wraps `#[test]` items of the PostgreSQL half of the suite. Built without
/// `TRIBUTARY_TEST_DATABASE_URL` and outside CI, each is `#[ignore]`d with the reason, so
/// `cargo test` reports how many were skipped; `cargo test -- --include-ignored` still runs them.
#[cfg(postgres_tests_ignored)]
#[macro_export]
macro_rules! postgres_test {
    ($($item:item)*) => {
        $(
            #[ignore = "PostgreSQL test: set TRIBUTARY_TEST_DATABASE_URL to run it"]
            $item
        )*
    };
}

/// Wraps `#[test]` items of the PostgreSQL half of the suite; built with
/// `TRIBUTARY_TEST_DATABASE_URL` or in CI, they run as they are.
#[cfg(not(postgres_tests_ignored))]
#[macro_export]
macro_rules! postgres_test {
    ($($item:item)*) => {
        $($item)*
    };
}
