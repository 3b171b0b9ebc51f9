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
        // before any thread exists: classic tracepoints need tracefs; the
        // namespace left for it is kept for the commands `run` starts
        let ns = std::fs::File::open("/proc/self/ns/mnt");
        lockscope::sources::private_tracefs();
        if let Ok(ns) = ns {
            lockscope::app::remember_mount_ns(ns);
        }
    }
    match lockscope::app::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // one "lockscope:" prefix, whatever the message starts with
            let msg = format!("{e:#}");
            let msg = msg.strip_prefix("lockscope: ").unwrap_or(&msg);
            eprintln!("lockscope: {msg}");
            let code = if e.downcast_ref::<lockscope::app::Usage>().is_some() {
                2
            } else {
                1
            };
            std::process::exit(code);
        }
    }
}
