//! The storage engine's flush and compaction threads run at a lower CPU priority
//! (`StoreOptions::worker_nice`). Its own test binary: the setting reaches every store's
//! workers in the process, so other tests' stores would disturb the counts.
#![cfg(target_os = "linux")]

use kairos_store::{Store, StoreOptions};

/// Nice values of this process's threads named `name`, read from /proc.
fn nice_of_threads(name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        out.push(nice_in(&task.path().join("stat")));
    }
    out
}

fn own_nice() -> i32 {
    nice_in(std::path::Path::new("/proc/thread-self/stat"))
}

/// The nice value in a thread's `stat` file: the 19th field, counted after the
/// parenthesised name (which may hold spaces).
fn nice_in(stat: &std::path::Path) -> i32 {
    let stat = std::fs::read_to_string(stat).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("name") + 2..]
        .split(' ')
        .collect();
    fields[16].parse().expect("nice")
}

/// Also pins a race: a new thread takes its name only when it first runs, so a scan made
/// right after fjall's `open` missed workers not yet named (this test failed four times in
/// ten before `open` waited for them).
#[test]
fn storage_workers_run_at_the_configured_nice_value_and_only_then() {
    let base = own_nice();
    let a = tempfile::tempdir().expect("tempdir");
    let first = Store::open(
        a.path(),
        &StoreOptions {
            worker_nice: None,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let workers = nice_of_threads("fjall:worker");
    assert!(!workers.is_empty(), "fjall names its workers fjall:worker");
    assert!(
        workers.iter().all(|&n| n == base),
        "without worker_nice they keep the process's priority: {workers:?}"
    );
    assert_eq!(own_nice(), base, "nothing else is touched");

    let target = (base + 5).min(19);
    let b = tempfile::tempdir().expect("tempdir");
    let second = Store::open(
        b.path(),
        &StoreOptions {
            worker_nice: Some(target),
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let workers = nice_of_threads("fjall:worker");
    assert!(workers.len() >= 2 * 6, "both stores' workers: {workers:?}");
    assert!(
        workers.iter().all(|&n| n == target),
        "every worker lowered to {target}: {workers:?}"
    );
    assert_eq!(own_nice(), base, "the caller's thread keeps its priority");
    drop((first, second));
}
