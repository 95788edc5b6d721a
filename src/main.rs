use std::process::ExitCode;

fn main() -> ExitCode {
    kidney_screen::cli::main()
}
