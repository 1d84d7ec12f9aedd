//! `shoal`: the one binary. Wiring only: `shoal daemon`, the hidden `shoal shim` (the per-task
//! supervisor of the process runtime), the hidden `shoal testimage` (the built-in test workload,
//! `shoal-testimage`), `shoal machine` (`shoal-machine`), and the CLI verbs (`shoal-cli`).

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == shoal_testimage::SUBCOMMAND)
    {
        std::process::exit(shoal_testimage::main(argv[2..].to_vec()));
    }
    let code = match shoal_cli::run(argv) {
        shoal_cli::Dispatch::Done(code) => code,
        shoal_cli::Dispatch::Daemon(args) => shoal::daemon::main(args),
        shoal_cli::Dispatch::Shim(args) => shoal_agent::shim::shim_main(args),
        shoal_cli::Dispatch::Machine(args) => shoal_machine::main(args),
    };
    std::process::exit(code);
}
