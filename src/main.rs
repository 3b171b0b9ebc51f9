//! lockscope command line: parse, run, print errors as one line.
use clap::Parser;

fn main() {
    // A closed stdout (`lockscope trace | head`) ends quietly.
    // SAFETY: restoring the default SIGPIPE disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = lockscope::cli::Cli::parse();
    if cli.command.traces() {
        // before any thread exists: classic tracepoints need tracefs
        lockscope::sources::private_tracefs();
    }
    match lockscope::app::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("lockscope: {e:#}");
            let code = if e.downcast_ref::<lockscope::app::Usage>().is_some() {
                2
            } else {
                1
            };
            std::process::exit(code);
        }
    }
}
