//! The container's memory limit: the process's own memory cgroup, found
//! through `/proc/self/cgroup` and `/proc/self/mountinfo`, and its limit and
//! usage, for cgroup v1 (`memory.limit_in_bytes`, the hierarchical limit of
//! `memory.stat`, `memory.usage_in_bytes`) and v2 (`memory.max` of the
//! group and its ancestors, `memory.current`).
//!
//! Plain file reads on the collector thread or the caller's; nothing here
//! is reachable from the allocator. Every parser takes text and never
//! panics: a file that is missing or not as expected reads as "no limit".

use std::path::{Path, PathBuf};

/// The cgroup version a limit was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// cgroup v1, the `memory` controller's own hierarchy.
    V1,
    /// cgroup v2, the unified hierarchy.
    V2,
}

impl CgroupVersion {
    /// `"v1"` or `"v2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// Values at or above this are "no limit": cgroup v1 reports an unlimited
/// group as `PAGE_COUNTER_MAX` pages (about 2^63 bytes rounded to pages).
const UNLIMITED: u64 = 1 << 62;

/// The process's memory cgroup: its version and its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemoryCgroup {
    pub(crate) version: CgroupVersion,
    /// The group's directory (e.g. `/sys/fs/cgroup/memory/docker/abc`).
    pub(crate) dir: PathBuf,
    /// The hierarchy's mount point: ancestors are read up to it.
    mount: PathBuf,
}

impl MemoryCgroup {
    /// The calling process's memory cgroup, if it has one that can be read.
    pub(crate) fn of_this_process() -> Option<MemoryCgroup> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        MemoryCgroup::find(&cgroup, &mountinfo, Path::new("/"))
    }

    /// The memory cgroup that `proc_cgroup` (the text of
    /// `/proc/<pid>/cgroup`) and `mountinfo` (of `/proc/<pid>/mountinfo`)
    /// describe, with mount points taken below `root` (`/`, or a fixture
    /// directory in tests). A v1 memory controller wins over v2 (hybrid
    /// systems mount v2 without the memory controller).
    pub(crate) fn find(proc_cgroup: &str, mountinfo: &str, root: &Path) -> Option<MemoryCgroup> {
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        let groups: Vec<(&str, &str)> = proc_cgroup
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_id, controllers, path) = (f.next()?, f.next()?, f.next()?);
                Some((controllers, path))
            })
            .collect();
        let v1 = groups
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == "memory"))
            .and_then(|(_, path)| {
                let m = mounts.iter().find(|m| {
                    m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory")
                })?;
                Some((CgroupVersion::V1, m, *path))
            });
        let v2 = || {
            let (_, path) = groups.iter().find(|(c, _)| c.is_empty())?;
            let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
            Some((CgroupVersion::V2, m, *path))
        };
        let (version, mount, path) = v1.or_else(v2)?;
        let mount_dir = under(root, &mount.point);
        // The group's path relative to the mount's root; a path outside it
        // (a cgroup namespace shows "/" or a path the mount does not hold)
        // means the mount itself is the group.
        let relative = Path::new(path)
            .strip_prefix(&mount.root)
            .ok()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dir = mount_dir.join(relative);
        let dir = if dir.is_dir() { dir } else { mount_dir.clone() };
        Some(MemoryCgroup {
            version,
            dir,
            mount: mount_dir,
        })
    }

    /// The group's effective memory limit in bytes, `None` when unlimited
    /// or unreadable: v1's hierarchical limit (`memory.stat`) or else its
    /// own `memory.limit_in_bytes`; v2's smallest `memory.max` from the
    /// group up to the mount point.
    pub(crate) fn limit(&self) -> Option<u64> {
        match self.version {
            CgroupVersion::V1 => {
                let stat = std::fs::read_to_string(self.dir.join("memory.stat")).ok();
                stat.as_deref()
                    .and_then(|s| stat_value(s, "hierarchical_memory_limit"))
                    .or_else(|| read_number(&self.dir.join("memory.limit_in_bytes")))
                    .filter(|&l| l < UNLIMITED)
            }
            CgroupVersion::V2 => {
                let mut limit: Option<u64> = None;
                let mut dir = Some(self.dir.as_path());
                while let Some(d) = dir {
                    if let Some(l) = read_number(&d.join("memory.max")).filter(|&l| l < UNLIMITED) {
                        limit = Some(limit.map_or(l, |m| m.min(l)));
                    }
                    if d == self.mount {
                        break;
                    }
                    dir = d.parent().filter(|p| p.starts_with(&self.mount));
                }
                limit
            }
        }
    }

    /// The group's memory usage in bytes (page cache included, as the
    /// kernel counts it against the limit).
    pub(crate) fn usage(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read_number(&self.dir.join(file))
    }
}

/// `root` joined with an absolute mount point.
fn under(root: &Path, point: &Path) -> PathBuf {
    root.join(point.strip_prefix("/").unwrap_or(point))
}

/// One line of `/proc/self/mountinfo`: `id parent major:minor root point
/// options [optional fields…] - fstype source super_options`.
#[derive(Debug)]
struct Mount {
    root: PathBuf,
    point: PathBuf,
    fstype: String,
    super_options: String,
}

impl Mount {
    fn parse(line: &str) -> Option<Mount> {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let _source = right.next()?;
        let super_options = right.next().unwrap_or("");
        Some(Mount {
            root: PathBuf::from(unescape(left.get(3)?)),
            point: PathBuf::from(unescape(left.get(4)?)),
            fstype: fstype.to_string(),
            super_options: super_options.to_string(),
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file holding one number, or `max` (v2's "no limit", read as `None`).
fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a `memory.stat` text (`key value` lines).
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name)
    }

    fn find(name: &str) -> Option<MemoryCgroup> {
        let dir = fixture(name);
        let cgroup = std::fs::read_to_string(dir.join("proc_self_cgroup")).unwrap();
        let mountinfo = std::fs::read_to_string(dir.join("proc_self_mountinfo")).unwrap();
        MemoryCgroup::find(&cgroup, &mountinfo, &dir.join("root"))
    }

    #[test]
    fn v1_container_with_a_limit() {
        let g = find("v1").unwrap();
        assert_eq!(g.version, CgroupVersion::V1);
        assert!(g.dir.ends_with("sys/fs/cgroup/memory/docker/4f1e"), "{g:?}");
        // the hierarchical limit (a parent's 256 MiB) wins over the group's own
        assert_eq!(g.limit(), Some(256 << 20));
        assert_eq!(g.usage(), Some(104_857_600));
    }

    #[test]
    fn v1_without_a_limit() {
        let g = find("v1-unlimited").unwrap();
        assert_eq!(g.version, CgroupVersion::V1);
        assert_eq!(g.limit(), None);
        assert_eq!(g.usage(), Some(2_027_569_152));
    }

    #[test]
    fn v2_smallest_limit_up_the_tree() {
        let g = find("v2").unwrap();
        assert_eq!(g.version, CgroupVersion::V2);
        assert!(
            g.dir.ends_with("sys/fs/cgroup/kubepods.slice/pod-1/app"),
            "{g:?}"
        );
        // app: max; pod-1: 512 MiB; kubepods.slice: 2 GiB
        assert_eq!(g.limit(), Some(512 << 20));
        assert_eq!(g.usage(), Some(7_340_032));
    }

    #[test]
    fn v2_in_a_cgroup_namespace() {
        // "0::/" inside a namespace: the mount is the group
        let g = find("v2-namespace").unwrap();
        assert_eq!(g.version, CgroupVersion::V2);
        assert!(g.dir.ends_with("root/sys/fs/cgroup"), "{g:?}");
        assert_eq!(g.limit(), Some(1 << 30));
    }

    #[test]
    fn hybrid_prefers_the_v1_memory_controller() {
        let cgroup = "4:memory:/a\n0::/\n";
        let mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let g = MemoryCgroup::find(cgroup, mountinfo, Path::new("/nonexistent")).unwrap();
        assert_eq!(g.version, CgroupVersion::V1);
    }

    #[test]
    fn nothing_to_find() {
        assert_eq!(MemoryCgroup::find("", "", Path::new("/")), None);
        assert_eq!(
            MemoryCgroup::find("garbage", "more garbage", Path::new("/")),
            None
        );
        // a memory controller without its mount
        assert_eq!(
            MemoryCgroup::find(
                "4:memory:/a\n",
                "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n",
                Path::new("/")
            ),
            None
        );
    }

    #[test]
    fn mountinfo_lines() {
        let m = Mount::parse(
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.point, Path::new("/mnt two"));
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert!(Mount::parse("no separator here").is_none());
        assert!(Mount::parse("1 2 - ").is_none());
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    }

    #[test]
    fn stat_values() {
        let s = "cache 1\nhierarchical_memory_limit 268435456\nrss 3\n";
        assert_eq!(
            stat_value(s, "hierarchical_memory_limit"),
            Some(268_435_456)
        );
        assert_eq!(stat_value(s, "rss"), Some(3));
        assert_eq!(stat_value(s, "missing"), None);
        assert_eq!(
            stat_value("hierarchical_memory_limit x", "hierarchical_memory_limit"),
            None
        );
    }
}
