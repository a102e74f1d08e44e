//! The `ebpf-manager` command: see the crate's library for what each subcommand does.

fn main() -> std::process::ExitCode {
    let code = ebpf_manager_cli::run(
        std::env::args(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::ExitCode::from(code)
}
