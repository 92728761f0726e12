//! `vlmtest`: run evaluations from the command line (see `vlmtest --help`).

fn main() -> std::process::ExitCode {
    vlmtest::cli::main()
}
