#![allow(clippy::unwrap_used)]
//! Settings the `kairos` process gives itself at start.

mod support;

use support::*;

/// The binary turns transparent huge pages off for itself (see `main.rs`): with them, the
/// import ran 20-30% slower, the kernel zeroing 2 MB for every fault on memory the
/// allocator had handed back. Linux reports the process's setting in `THP_enabled` (5.0
/// and later); elsewhere there is nothing to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data")).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()));
    let Some(line) = status
        .iter()
        .flat_map(|s| s.lines())
        .find(|l| l.starts_with("THP_enabled:"))
        .map(str::to_owned)
    else {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
