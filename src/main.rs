//! lockscope command line: parse, run, print errors as one line.
use clap::Parser;

fn main() {
    // A closed stdout (`lockscope trace | head`) ends quietly.
    // SAFETY: restoring the default SIGPIPE disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = lockscope::cli::Cli::parse();
    if matches!(cli.command, lockscope::cli::Command::Serve(_)) {
        bound_malloc();
    }
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
            let code = if e.downcast_ref::<lockscope::status::Usage>().is_some() {
                2
            } else {
                1
            };
            std::process::exit(code);
        }
    }
}

/// `serve` reads full maps (tens of MB of records) once a second for as long
/// as it runs. With glibc's defaults, the first large block freed raises the
/// mmap threshold (up to 32 MB), so later reads' big vectors come from the
/// heap, where fragments pin them; and each thread may get its own arena.
/// A fixed threshold sends every block of 128 KiB or more to its own
/// mapping, returned to the kernel when freed; two arenas suffice for two
/// busy threads. An operator's own `GLIBC_TUNABLES` malloc settings win.
fn bound_malloc() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
