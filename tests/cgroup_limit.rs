//! `memory_limit = "auto"` against the real kernel: a host whose cache grows
//! without bound runs in a cgroup v1 memory group of 256 MiB. With the soft
//! limit from the container and a reclaimer on the cache it must be alive
//! after 30 s; the same host without allocscope's limit must be OOM-killed
//! (which shows the test can fail).
//!
//! Needs root and a writable cgroup v1 memory controller at
//! `/sys/fs/cgroup/memory`; skips with a message otherwise, and fails
//! instead when `ALLOCSCOPE_REQUIRE_TOOLS=1` (as `.ci/run` sets).
//!
//! The host is this test binary itself, re-run with `ALLOCSCOPE_CGROUP_HOST`
//! set: it waits on its standard input until the test has moved it into the
//! group, then allocates.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocscope::gc;
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

const GROUP_LIMIT: u64 = 256 << 20;
const HOST_SECONDS: u64 = 30;
const HOST_ENV: &str = "ALLOCSCOPE_CGROUP_HOST";
const CONTROLLER: &str = "/sys/fs/cgroup/memory";

/// The host: a cache that grows by 1 MiB blocks (every page written) at
/// about 200 MiB/s, with a reclaimer that empties it; `auto` sets the soft
/// limit from the container. Prints what it saw, one `key=value` a line.
fn host(mode: &str) {
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    // Only the memory limit may empty the cache: no threshold cycles.
    gc::set_threshold(None);
    if mode == "auto" {
        let limit = gc::set_memory_limit_auto(gc::DEFAULT_AUTO_RATIO).unwrap();
        println!("soft_limit={}", limit.map_or(0, |l| l));
    }
    let cache: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let c = cache.clone();
    let _reclaimer = gc::register_reclaimer("cache", move |p: &gc::Pressure| {
        if !p.is_over_limit() {
            return 0;
        }
        let mut c = c.lock().unwrap();
        let freed = c.iter().map(Vec::capacity).sum();
        *c = Vec::new();
        freed
    });
    let start = Instant::now();
    let mut max_rss = 0u64;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(HOST_SECONDS) {
        let block = vec![(n % 251) as u8 + 1; 1 << 20];
        cache.lock().unwrap().push(block);
        n += 1;
        if n.is_multiple_of(16) {
            max_rss = max_rss.max(rss());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = gc::stats();
    println!("allocated_mib={n}");
    println!("max_rss={max_rss}");
    println!("limit_cycles={}", s.cycles_for(gc::CycleReason::Limit));
    println!("source={}", gc::limit_source().as_str());
}

/// Resident bytes of this process.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A cgroup v1 memory group of its own, removed on drop.
struct Group(PathBuf);

impl Group {
    fn create(name: &str) -> Result<Group, String> {
        let dir =
            Path::new(CONTROLLER).join(format!("allocscope-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let g = Group(dir);
        g.write("memory.limit_in_bytes", &GROUP_LIMIT.to_string())?;
        // no swap to escape into, where the kernel accounts it
        if g.0.join("memory.memsw.limit_in_bytes").exists() {
            g.write("memory.memsw.limit_in_bytes", &GROUP_LIMIT.to_string())?;
        }
        Ok(g)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.0.join(file), value)
            .map_err(|e| format!("cannot write {value} to {}/{file}: {e}", self.0.display()))
    }

    fn read(&self, file: &str) -> u64 {
        std::fs::read_to_string(self.0.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Group {
    /// The `oom_kill` count of `memory.oom_control` (0 where the kernel does
    /// not report it).
    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // the group is empty once the host has exited
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// What a host run ended with.
struct Run {
    status: std::process::ExitStatus,
    out: Vec<String>,
    max_usage: u64,
    oom_kills: u64,
}

impl Run {
    /// The host's `key=value` (libtest may print it after its own words on
    /// the same line).
    fn text(&self, key: &str) -> Option<&str> {
        let key = format!("{key}=");
        self.out
            .iter()
            .flat_map(|l| l.split_whitespace())
            .find_map(|w| w.strip_prefix(key.as_str()))
    }

    fn value(&self, key: &str) -> Option<u64> {
        self.text(key)?.parse().ok()
    }
}

/// Runs the host in a group of its own; `None` (after saying why) when
/// cgroups cannot be used here.
fn run_host(mode: &str) -> Option<Run> {
    let group = match Group::create(mode) {
        Ok(g) => g,
        Err(e) => {
            let msg = format!("cgroup v1 memory groups cannot be created here ({e})");
            if std::env::var("ALLOCSCOPE_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{msg}, and ALLOCSCOPE_REQUIRE_TOOLS=1");
            }
            eprintln!("SKIPPED: {msg}; set ALLOCSCOPE_REQUIRE_TOOLS=1 to make this a failure");
            return None;
        }
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "host_process", "--nocapture", "--test-threads=1"])
        .env(HOST_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    group
        .write("cgroup.procs", &child.id().to_string())
        .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let deadline = Instant::now() + Duration::from_secs(HOST_SECONDS * 3);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the {mode} host did not end within {:?}", HOST_SECONDS * 3);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    let run = Run {
        status,
        out,
        max_usage: group.read("memory.max_usage_in_bytes"),
        oom_kills: group.oom_kills(),
    };
    eprintln!(
        "{mode} host: {status:?}, group peak {} MiB of {} MiB, OOM kills {}, {:?}",
        run.max_usage >> 20,
        GROUP_LIMIT >> 20,
        run.oom_kills,
        run.out
    );
    Some(run)
}

/// The entry point of the re-run host; does nothing in an ordinary run.
#[test]
fn host_process() {
    if let Ok(mode) = std::env::var(HOST_ENV) {
        host(&mode);
    }
}

#[test]
fn auto_limit_keeps_the_host_alive_in_its_container() {
    let Some(run) = run_host("auto") else { return };
    assert!(
        run.status.success(),
        "the host with memory_limit = auto died: {:?} ({:?})",
        run.status,
        run.out
    );
    let soft = run.value("soft_limit").unwrap();
    assert_eq!(soft, (GROUP_LIMIT as f64 * gc::DEFAULT_AUTO_RATIO) as u64);
    assert_eq!(run.text("source"), Some("container"));
    // it allocated far more than the group holds, and the limit did the work
    assert!(run.value("allocated_mib").unwrap() > 4 * (GROUP_LIMIT >> 20));
    assert!(run.value("limit_cycles").unwrap() > 0);
    let max_rss = run.value("max_rss").unwrap();
    assert!(max_rss < GROUP_LIMIT, "resident {max_rss} bytes");
    // the kernel never had to hold the group at its limit
    assert!(run.max_usage < GROUP_LIMIT, "the group reached its limit");
    assert_eq!(run.oom_kills, 0);
}

#[test]
fn without_the_limit_the_same_host_is_oom_killed() {
    let Some(run) = run_host("none") else { return };
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGKILL),
        "the host without a limit was not OOM-killed: {:?} ({:?})",
        run.status,
        run.out
    );
    assert_eq!(
        run.max_usage, GROUP_LIMIT,
        "the group never reached its limit"
    );
    assert!(run.oom_kills > 0, "no OOM kill in the group");
}
