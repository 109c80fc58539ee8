//! The simulated copier: faithful copies, replay from a seed, each anomaly
//! under its fault (and not without), conflict-copy names per service,
//! settling to equal folders, and no invented content.

use chatvault_test_services::copier::{Copier, Event, Faults, Service, CLOCK_START};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

type Files = BTreeMap<PathBuf, Vec<u8>>;

struct Setup {
    _dir: tempfile::TempDir,
    copier: Copier,
    devices: usize,
    /// Every content a device wrote.
    written: BTreeSet<Vec<u8>>,
}

fn setup(devices: usize, seed: u64, faults: Faults) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let folders = (0..devices)
        .map(|i| dir.path().join(format!("device{i}")))
        .collect();
    let copier = Copier::new(folders, seed, faults).expect("copier");
    Setup {
        _dir: dir,
        copier,
        devices,
        written: BTreeSet::new(),
    }
}

impl Setup {
    /// Device `device` writes `content` at `path`, as an app does: a
    /// temporary file, then a rename.
    fn write(&mut self, device: usize, path: &str, content: &[u8]) {
        let target = self.copier.folder(device).join(path);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        let temp = target.with_extension("app-tmp");
        std::fs::write(&temp, content).expect("write");
        std::fs::rename(&temp, &target).expect("rename");
        self.written.insert(content.to_vec());
    }

    fn delete(&mut self, device: usize, path: &str) {
        std::fs::remove_file(self.copier.folder(device).join(path)).expect("delete");
    }

    fn files(&self, device: usize) -> Files {
        self.copier.files(device).expect("files")
    }

    fn read(&self, device: usize, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.copier.folder(device).join(path)).ok()
    }

    fn step(&mut self) -> Vec<Event> {
        self.copier.step().expect("step").to_vec()
    }

    /// Every content in every folder was written by a device or is a
    /// prefix of such a content.
    fn assert_nothing_invented(&self) {
        for device in 0..self.devices {
            for (path, content) in self.files(device) {
                assert!(
                    self.written.iter().any(|w| w.starts_with(&content)),
                    "device {device} holds invented content at {}: {:?}",
                    path.display(),
                    String::from_utf8_lossy(&content)
                );
            }
        }
    }

    fn assert_all_equal(&self) {
        let first = self.files(0);
        for device in 1..self.devices {
            assert_eq!(
                self.files(device),
                first,
                "device {device} differs from device 0"
            );
        }
    }
}

#[test]
fn faithful_copier_copies_creations_modifications_deletions_and_directories() {
    let mut s = setup(3, 1, Faults::none());
    s.write(0, "log/dev-a/0001", b"entry one");
    s.write(0, "top.txt", b"top");
    s.step();
    for device in 1..3 {
        assert_eq!(
            s.read(device, "log/dev-a/0001").as_deref(),
            Some(&b"entry one"[..])
        );
        assert_eq!(s.read(device, "top.txt").as_deref(), Some(&b"top"[..]));
    }
    s.write(1, "top.txt", b"top, edited on 1");
    s.step();
    for device in 0..3 {
        assert_eq!(
            s.read(device, "top.txt").as_deref(),
            Some(&b"top, edited on 1"[..])
        );
    }
    s.delete(2, "log/dev-a/0001");
    s.step();
    for device in 0..3 {
        assert!(s.read(device, "log/dev-a/0001").is_none());
        // Devices 0 and 1 had the file deleted by the copier, which removes
        // the directories it emptied; device 2's are its own business.
        assert_eq!(
            s.copier.folder(device).join("log").exists(),
            device == 2,
            "device {device}"
        );
    }
    assert_eq!(s.copier.run_until_quiet(10).expect("quiet"), 1);
    assert_eq!(s.copier.queued(), 0);
    s.assert_all_equal();
}

const PATHS: [&str; 4] = ["a.txt", "dir/b.bin", "dir/sub/c", "log/d1"];

/// A random workload (from its own generator, seeded by `seed`) of writes
/// and deletions on random devices, `steps` steps, with the invariant
/// "nothing invented" checked after each step; then settles.
fn random_run(seed: u64, faults: Faults, devices: usize, steps: u64) -> Setup {
    let mut s = setup(devices, seed, faults);
    let mut workload = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for step in 0..steps {
        for _ in 0..workload.gen_range(0..3) {
            let device = workload.gen_range(0..devices);
            let path = PATHS[workload.gen_range(0..PATHS.len())];
            if workload.gen_bool(0.2) && s.read(device, path).is_some() {
                s.delete(device, path);
            } else {
                let content = format!("written by device {device} at step {step}: {path}");
                s.write(device, path, content.as_bytes());
            }
        }
        s.step();
        s.assert_nothing_invented();
    }
    s
}

#[test]
fn the_same_seed_replays_the_same_events_and_files() {
    for service in [Service::Syncthing, Service::Dropbox] {
        let a = random_run(7, Faults::all(service), 3, 25);
        let b = random_run(7, Faults::all(service), 3, 25);
        assert!(a.copier.log().len() > 50, "a busy run");
        assert_eq!(a.copier.log(), b.copier.log());
        for device in 0..3 {
            assert_eq!(a.files(device), b.files(device));
        }
        let c = random_run(8, Faults::all(service), 3, 25);
        assert_ne!(a.copier.log(), c.copier.log(), "another seed, another run");
    }
}

#[test]
fn settling_makes_every_folder_equal_and_nothing_is_invented() {
    let mut conflicts = 0;
    for seed in 0..12 {
        let service = Service::ALL[seed as usize % Service::ALL.len()];
        let mut s = random_run(seed, Faults::all(service), 3, 30);
        let steps = s.copier.settle(200).expect("settles");
        assert!(steps >= 1);
        assert_eq!(s.copier.queued(), 0);
        s.assert_all_equal();
        s.assert_nothing_invented();
        // Quiet means quiet: another step changes nothing.
        assert!(s.step().is_empty());
        conflicts += s
            .copier
            .log()
            .iter()
            .filter(|e| matches!(e, Event::ConflictCopy { .. }))
            .count();
    }
    assert!(conflicts > 0, "the random workloads make conflicts");
}

#[test]
fn delays_hold_a_link_back_but_keep_its_order() {
    let faults = Faults {
        delay: 1.0,
        max_delay: 3,
        ..Faults::none()
    };
    for seed in 0..20 {
        let mut s = setup(2, seed, faults.clone());
        s.write(0, "A", b"first");
        s.step();
        assert!(
            s.read(1, "A").is_none(),
            "seed {seed}: delayed, not there yet"
        );
        s.write(0, "B", b"second");
        for _ in 0..10 {
            s.step();
            assert!(
                s.read(1, "B").is_none() || s.read(1, "A").is_some(),
                "seed {seed}: B arrived before A on a delayed link"
            );
        }
        assert_eq!(s.read(1, "A").as_deref(), Some(&b"first"[..]));
        assert_eq!(s.read(1, "B").as_deref(), Some(&b"second"[..]));
    }
}

/// Whether, for `seed`, device 1 ever holds B (created after A) without A.
fn b_overtakes_a(seed: u64, faults: &Faults) -> bool {
    let mut s = setup(2, seed, faults.clone());
    s.write(0, "A", b"first");
    s.step();
    s.write(0, "B", b"second");
    let mut overtaken = false;
    for _ in 0..10 {
        s.step();
        overtaken |= s.read(1, "B").is_some() && s.read(1, "A").is_none();
    }
    assert_eq!(s.read(1, "A").as_deref(), Some(&b"first"[..]));
    assert_eq!(s.read(1, "B").as_deref(), Some(&b"second"[..]));
    overtaken
}

#[test]
fn reordering_lets_a_later_file_overtake_an_earlier_one() {
    let reorder = Faults {
        reorder: 1.0,
        max_delay: 4,
        ..Faults::none()
    };
    let overtaking = (0..30)
        .filter(|seed| b_overtakes_a(*seed, &reorder))
        .count();
    assert!(overtaking > 0, "no seed of 30 reordered A and B");
    let faithful = (0..30)
        .filter(|seed| b_overtakes_a(*seed, &Faults::none()))
        .count();
    assert_eq!(faithful, 0);
}

#[test]
fn two_versions_of_one_file_never_overtake_each_other() {
    let reorder = Faults {
        reorder: 1.0,
        max_delay: 4,
        ..Faults::none()
    };
    for seed in 0..20 {
        let mut s = setup(2, seed, reorder.clone());
        s.write(0, "A", b"version 1");
        s.step();
        s.write(0, "A", b"version 2");
        let mut seen = Vec::new();
        for _ in 0..10 {
            s.step();
            seen.extend(s.read(1, "A"));
        }
        seen.dedup();
        assert!(
            seen == [b"version 2".to_vec()]
                || seen == [b"version 1".to_vec(), b"version 2".to_vec()],
            "seed {seed}: device 1 saw {seen:?}"
        );
        assert!(!s
            .files(1)
            .keys()
            .any(|p| p.to_string_lossy().contains("conflict")));
    }
}

#[test]
fn partial_files_appear_truncated_then_whole() {
    let faults = Faults {
        partial: 1.0,
        max_delay: 2,
        ..Faults::none()
    };
    let content = b"0123456789abcdef, a record of some length";
    for seed in 0..10 {
        let mut s = setup(2, seed, faults.clone());
        s.write(0, "dir/record", content);
        let events = s.step();
        let seen = s.read(1, "dir/record").expect("present, truncated");
        assert!(
            seen.len() < content.len() && content.starts_with(&seen),
            "seed {seed}"
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::PartialWritten { device: 1, .. })));
        // The truncated file is not taken for an edit of device 1.
        assert!(!s
            .step()
            .iter()
            .any(|e| matches!(e, Event::Scanned { device: 1, .. })));
        s.copier.run_until_quiet(10).expect("quiet");
        assert_eq!(s.read(1, "dir/record").as_deref(), Some(&content[..]));
        assert!(s
            .copier
            .log()
            .iter()
            .any(|e| matches!(e, Event::Completed { device: 1, .. })));
        assert_eq!(s.read(0, "dir/record").as_deref(), Some(&content[..]));
    }
}

#[test]
fn a_partial_file_changed_meanwhile_is_not_completed() {
    let faults = Faults {
        partial: 1.0,
        max_delay: 3,
        ..Faults::none()
    };
    let mut s = setup(2, 3, faults);
    s.write(0, "record", b"the whole content");
    s.step();
    s.write(1, "record", b"rewritten on device 1");
    s.copier.settle(20).expect("settles");
    assert!(s
        .copier
        .log()
        .iter()
        .any(|e| matches!(e, Event::Dropped { device: 1, .. })));
    assert_eq!(
        s.read(1, "record").as_deref(),
        Some(&b"rewritten on device 1"[..])
    );
    s.assert_all_equal();
}

#[test]
fn duplicates_rewrite_the_same_content() {
    let faults = Faults {
        duplicate: 1.0,
        max_delay: 1,
        ..Faults::none()
    };
    let mut s = setup(2, 5, faults);
    s.write(0, "file", b"content");
    s.step();
    let inode = std::fs::metadata(s.copier.folder(1).join("file"))
        .expect("copied")
        .ino();
    let events = s.step();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::DuplicateRewritten { device: 1, .. })));
    let rewritten = std::fs::metadata(s.copier.folder(1).join("file")).expect("there");
    assert_ne!(rewritten.ino(), inode, "rewritten as a new file");
    assert_eq!(s.read(1, "file").as_deref(), Some(&b"content"[..]));
    s.copier.run_until_quiet(10).expect("quiet");
    s.assert_all_equal();

    // Without the fault, nothing is delivered twice.
    let mut s = setup(2, 5, Faults::none());
    s.write(0, "file", b"content");
    s.copier.run_until_quiet(10).expect("quiet");
    assert!(!s
        .copier
        .log()
        .iter()
        .any(|e| matches!(e, Event::DuplicateRewritten { .. })));
}

#[test]
fn a_device_that_missed_a_delete_re_creates_the_file() {
    let resurrect = Faults {
        resurrect: 1.0,
        ..Faults::none()
    };
    let mut s = setup(2, 9, resurrect);
    s.write(0, "dir/file", b"keep me");
    s.copier.run_until_quiet(10).expect("quiet");
    s.delete(0, "dir/file");
    s.copier.run_until_quiet(10).expect("quiet");
    assert!(s
        .copier
        .log()
        .iter()
        .any(|e| matches!(e, Event::Resurrected { device: 1, .. })));
    for device in 0..2 {
        assert_eq!(s.read(device, "dir/file").as_deref(), Some(&b"keep me"[..]));
    }

    let mut s = setup(2, 9, Faults::none());
    s.write(0, "dir/file", b"keep me");
    s.copier.run_until_quiet(10).expect("quiet");
    s.delete(0, "dir/file");
    s.copier.run_until_quiet(10).expect("quiet");
    for device in 0..2 {
        assert!(s.read(device, "dir/file").is_none());
    }
}

#[test]
fn a_modification_beats_a_concurrent_delete() {
    let mut s = setup(2, 2, Faults::none());
    s.write(0, "chat", b"base");
    s.copier.run_until_quiet(10).expect("quiet");
    s.delete(0, "chat");
    s.write(1, "chat", b"edited");
    s.copier.run_until_quiet(10).expect("quiet");
    for device in 0..2 {
        assert_eq!(s.files(device).len(), 1, "no conflict copy");
        assert_eq!(s.read(device, "chat").as_deref(), Some(&b"edited"[..]));
    }
}

#[test]
fn conflict_names_follow_each_service() {
    let path = Path::new("dir/chat.txt");
    let at = CLOCK_START + 3_723; // 2025-01-01 01:02:03 UTC
    let name = |service: Service, variant| {
        service
            .conflict_name(path, "ABCDEF2", "phone", at, variant)
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(
        name(Service::Syncthing, 0),
        "dir/chat.sync-conflict-20250101-010203-ABCDEF2.txt"
    );
    assert_eq!(
        name(Service::Dropbox, 0),
        "dir/chat (phone's conflicted copy 2025-01-01).txt"
    );
    assert_eq!(
        name(Service::Nextcloud, 0),
        "dir/chat (conflicted copy 2025-01-01 010203).txt"
    );
    assert_eq!(name(Service::OneDrive, 0), "dir/chat-phone.txt");
    assert_eq!(name(Service::ICloud, 0), "dir/chat 2.txt");
    assert_eq!(name(Service::ICloud, 1), "dir/chat 3.txt");
    assert_eq!(
        name(Service::Dropbox, 1),
        "dir/chat (phone's conflicted copy 2025-01-01) (1).txt"
    );
    assert_eq!(
        Service::Syncthing
            .conflict_name(
                Path::new("log/00000000000000000007"),
                "ABCDEF2",
                "phone",
                at,
                0
            )
            .to_string_lossy(),
        "log/00000000000000000007.sync-conflict-20250101-010203-ABCDEF2"
    );
    assert_eq!(
        Service::OneDrive
            .conflict_name(Path::new(".hidden"), "ABCDEF2", "phone", at, 0)
            .to_string_lossy(),
        ".hidden-phone"
    );
}

#[test]
fn concurrent_edits_make_one_conflict_copy_named_by_the_service() {
    for service in Service::ALL {
        let mut s = setup(2, 4, Faults::none().with_service(service));
        s.write(0, "dir/chat.txt", b"base");
        s.copier.run_until_quiet(10).expect("quiet");
        s.write(0, "dir/chat.txt", b"edited on device 0");
        s.write(1, "dir/chat.txt", b"edited on device 1");
        let step = s.copier.steps() + 1;
        s.copier.run_until_quiet(10).expect("quiet");
        s.assert_all_equal();
        s.assert_nothing_invented();
        // Device 1's edit was scanned after device 0's: it has the later id
        // and wins; device 0's goes to the copy, named after device 0.
        let copy = service.conflict_name(
            Path::new("dir/chat.txt"),
            s.copier.device_id(0),
            &s.copier.device_name(0),
            CLOCK_START + step,
            0,
        );
        let expected: Files = [
            (
                PathBuf::from("dir/chat.txt"),
                b"edited on device 1".to_vec(),
            ),
            (copy.clone(), b"edited on device 0".to_vec()),
        ]
        .into_iter()
        .collect();
        assert_eq!(s.files(0), expected, "{service:?}");
        let id = s.copier.device_id(0);
        assert!(
            id.len() == 7
                && id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        let name = copy.to_string_lossy();
        match service {
            Service::Syncthing => assert!(
                name.starts_with("dir/chat.sync-conflict-20250101-0000")
                    && name.ends_with(&format!("-{id}.txt"))
            ),
            Service::Dropbox => {
                assert_eq!(name, "dir/chat (device0's conflicted copy 2025-01-01).txt")
            }
            Service::Nextcloud => {
                assert!(name.starts_with("dir/chat (conflicted copy 2025-01-01 0000"))
            }
            Service::OneDrive => assert_eq!(name, "dir/chat-device0.txt"),
            Service::ICloud => assert_eq!(name, "dir/chat 2.txt"),
        }
    }
}

#[test]
fn a_taken_conflict_name_gets_the_next_variant() {
    let mut s = setup(2, 6, Faults::none().with_service(Service::ICloud));
    s.write(0, "chat.txt", b"base");
    s.copier.run_until_quiet(10).expect("quiet");
    for round in 0..2u8 {
        s.write(
            0,
            "chat.txt",
            format!("round {round} on device 0").as_bytes(),
        );
        s.write(
            1,
            "chat.txt",
            format!("round {round} on device 1").as_bytes(),
        );
        s.copier.run_until_quiet(10).expect("quiet");
    }
    s.assert_all_equal();
    let files = s.files(0);
    assert_eq!(
        files
            .keys()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["chat 2.txt", "chat 3.txt", "chat.txt"]
    );
    assert_eq!(files[Path::new("chat 2.txt")], b"round 0 on device 0");
    assert_eq!(files[Path::new("chat 3.txt")], b"round 1 on device 0");
}
