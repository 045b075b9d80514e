//! The `prober` command line, built inside the test crate so that the
//! integration tests can run it as a real process (cargo gives tests the path
//! of their own package's binaries only). It calls the same entry point as
//! `prober/src/main.rs`.

fn main() -> std::process::ExitCode {
    prober::cli::main()
}
