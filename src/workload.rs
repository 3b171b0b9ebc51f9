//! TEMPORARY STUB (replaced by the helper's module)
use std::time::Duration;
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Pipe,
    Mmap,
}
impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self)
    }
}
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    pub threads: usize,
    pub ops: u64,
    pub write_size: usize,
    pub map_size: usize,
    pub start_delay: Duration,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadReport {
    pub kind: WorkloadKind,
    pub pid: u32,
    pub tids: Vec<u32>,
    pub threads: usize,
    pub ops_per_thread: u64,
    pub total_ops: u64,
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub blocked_ns: u64,
}
pub fn parse_kind(s: &str) -> Result<WorkloadKind, String> {
    match s {
        "pipe" => Ok(WorkloadKind::Pipe),
        "mmap" => Ok(WorkloadKind::Mmap),
        _ => Err("pipe|mmap".into()),
    }
}
pub fn run(spec: &WorkloadSpec) -> anyhow::Result<WorkloadReport> {
    let mut fds = [0i32; 2];
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    let (r, w) = (fds[0], fds[1]);
    let t0 = std::time::Instant::now();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
    });
    let hs: Vec<_> = (0..spec.threads)
        .map(|_| {
            let ops = spec.ops;
            std::thread::spawn(move || {
                let buf = [0u8; 4096];
                for _ in 0..ops {
                    unsafe { libc::write(w, buf.as_ptr().cast(), 4096) };
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    unsafe { libc::close(w) };
    let _ = reader.join();
    Ok(WorkloadReport {
        kind: spec.kind,
        pid: std::process::id(),
        tids: vec![],
        threads: spec.threads,
        ops_per_thread: spec.ops,
        total_ops: spec.ops * spec.threads as u64,
        mmap_calls: 0,
        munmap_calls: 0,
        bytes: 0,
        elapsed_ns: t0.elapsed().as_nanos() as u64,
        blocked_ns: 0,
    })
}
