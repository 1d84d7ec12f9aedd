//! `shoal`: the one binary. Wiring only: `shoal daemon`, the hidden `shoal shim` (the per-task
//! supervisor of the process runtime), `shoal machine` (`shoal-machine`), and the CLI verbs (`shoal-cli`).

fn main() {
    let code = match shoal_cli::run(std::env::args_os().collect()) {
        shoal_cli::Dispatch::Done(code) => code,
        shoal_cli::Dispatch::Daemon(args) => shoal::daemon::main(args),
        shoal_cli::Dispatch::Shim(args) => shoal_agent::shim::shim_main(args),
        shoal_cli::Dispatch::Machine(args) => shoal_machine::main(args),
    };
    std::process::exit(code);
}
