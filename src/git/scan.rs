//! The search of every tracked file for the secrets, plaintext Secrets and SOPS facts.
//!
//! The index lists the files. Each work-tree file is read once (lstat, open, one read, close)
//! into a buffer its thread keeps, on every core when there are many files; the staged blob is
//! read as well only where it can differ from the file on disk. The findings come in the
//! index's order, whatever thread read a file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use git2::{Index, IndexEntry, Oid, Repository};
use memchr::memmem::Finder;

use super::search::{self, Found, Needles, StatData};
use super::{Hygiene, Secrets};
use crate::app_key::AppKey;
use crate::diag::{Code, Diagnostic, Position};
use crate::sops::{self, Encrypted, FileFormat, Inventory, Rule, RulesError};

/// Files larger than this are not searched for the token (they are not hand-edited text).
const MAX_SCAN_SIZE: usize = 8 * 1024 * 1024;
/// Fewer files than this are read on the calling thread alone: threads cost more than they
/// save on a small repository.
const PARALLEL_MIN_FILES: usize = 128;
/// More threads than this gain nothing on reads of small files.
const MAX_THREADS: usize = 8;

/// A tracked file to look at, as the index has it.
struct Tracked {
    shown: String,
    id: Oid,
    stat: StatData,
    is_yaml: bool,
}

/// A `.sops.yaml`'s rules, or an encrypted file's recipients.
enum SopsFact {
    Rules(Vec<Rule>),
    Unreadable(RulesError),
    Encrypted(Encrypted),
}

/// What one content says besides the secrets.
#[derive(Default)]
struct Facts {
    plaintext: Option<usize>,
    sops: Option<SopsFact>,
}

/// What the work tree's copy of a tracked file says.
#[derive(Default)]
struct OnDisk {
    /// A regular file of at most [`MAX_SCAN_SIZE`] bytes was read.
    read: bool,
    /// The staged blob may hold secrets the file does not.
    may_differ: bool,
    found: Found,
    facts: Facts,
}

/// What every file is searched with, compiled once.
struct Scan<'a> {
    workdir: &'a Path,
    needles: Needles,
    sops: bool,
    index_mtime: Option<(u32, u32)>,
    secret_kind: Finder<'static>,
    sops_word: Finder<'static>,
}

/// What a thread keeps from one file to the next.
#[derive(Default)]
struct Worker {
    path: PathBuf,
    buf: Vec<u8>,
}

/// Searches every tracked or staged file (staged content and working-tree content) for the
/// token and the age identities, YAML files for plaintext Kubernetes Secrets, and collects the
/// SOPS creation rules and encrypted files.
pub(super) fn scan_tracked(
    repo: &Repository,
    index: &Index,
    workdir: &Path,
    secrets_rel: &Path,
    secrets: Secrets<'_>,
    hygiene: &mut Hygiene,
) {
    let identities: Vec<&str> = secrets.age_identities.iter().map(|i| i.expose()).collect();
    let scan = Scan {
        workdir,
        needles: Needles::new(
            secrets.token.map(|t| t.expose()),
            &identities,
            &secrets.app_key.map(AppKey::needles).unwrap_or_default(),
        ),
        sops: !secrets.age_identities.is_empty(),
        index_mtime: index
            .path()
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| mtime_of(&m)),
        secret_kind: Finder::new(b"Secret").into_owned(),
        sops_word: Finder::new(b"sops").into_owned(),
    };
    // Every file is searched for the secrets when there are any; otherwise only YAML files
    // (plaintext Secrets) and, with an identity, the SOPS files are read at all.
    let search = scan.needles.any();
    let tracked: Vec<Tracked> = index
        .iter()
        // Submodules (gitlinks) have no content here.
        .filter(|entry| entry.mode != 0o160000)
        .filter_map(|entry| {
            let shown = String::from_utf8_lossy(&entry.path).into_owned();
            let rel = Path::new(&shown);
            if rel == secrets_rel {
                return None;
            }
            let is_yaml = rel.extension().is_some_and(|e| e == "yaml" || e == "yml");
            (search || is_yaml || scan.sops && is_sops_file(&shown)).then(|| Tracked {
                id: entry.id,
                stat: stat_of_entry(&entry),
                is_yaml,
                shown,
            })
        })
        .collect();
    let threads = if tracked.len() < PARALLEL_MIN_FILES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
    };
    let on_disk = par_map(&tracked, threads, Worker::default, |w, t| {
        scan.on_disk(w, t)
    });

    let odb = repo.odb().ok();
    for (t, disk) in tracked.iter().zip(on_disk) {
        // The staged blob counts too when it may differ from the file on disk (usually it is
        // the same content, which is then read once); otherwise it stands in for a file
        // missing on disk. Its size comes from the header first, so a large blob is never
        // loaded.
        let staged = (!disk.read || disk.may_differ)
            .then_some(odb.as_ref())
            .flatten()
            .and_then(|odb| odb.read_header(t.id).ok())
            .filter(|&(size, _)| size <= MAX_SCAN_SIZE)
            .and_then(|_| repo.find_blob(t.id).ok());
        let mut found = disk.found;
        let mut facts = disk.facts;
        if let Some(blob) = &staged {
            found = found.or(scan.needles.search(blob.content()));
            if !disk.read {
                facts = scan.facts(t, blob.content());
            }
        }
        report(&t.shown, found, facts, hygiene);
    }
}

impl Scan<'_> {
    /// Reads the work tree's copy of `t`, if it is a regular file of at most
    /// [`MAX_SCAN_SIZE`] bytes (not followed through a symlink: git tracks a symlink's target
    /// path, not what it points to). A FIFO, a device or a symlink to `/dev/zero` is skipped,
    /// never opened.
    fn on_disk(&self, w: &mut Worker, t: &Tracked) -> OnDisk {
        w.path.clear();
        w.path.push(self.workdir);
        w.path.push(&t.shown);
        let Ok(meta) = std::fs::symlink_metadata(&w.path) else {
            return OnDisk::default();
        };
        if !meta.file_type().is_file() || meta.len() > MAX_SCAN_SIZE as u64 {
            return OnDisk::default();
        }
        let Ok(mut file) = open_regular(&w.path) else {
            return OnDisk::default();
        };
        let Ok(Some(len)) =
            search::read_bounded(&mut file, meta.len() as usize, MAX_SCAN_SIZE, &mut w.buf)
        else {
            return OnDisk::default();
        };
        drop(file);
        let content = &w.buf[..len];
        let found = self.needles.search(content);
        // Only a file that may not be what was staged, and only while the blob could add a
        // finding, is hashed to compare it with the staged blob.
        let may_differ = self.needles.any()
            && !self.needles.complete(found)
            && !stat_of_file(&meta)
                .is_some_and(|disk| search::unchanged(t.stat, disk, self.index_mtime))
            && Oid::hash_object(git2::ObjectType::Blob, content).is_ok_and(|oid| oid != t.id);
        OnDisk {
            read: true,
            may_differ,
            found,
            facts: self.facts(t, content),
        }
    }

    /// The plaintext Secret of a YAML file, and, with an identity to check them against, its
    /// SOPS facts.
    fn facts(&self, t: &Tracked, content: &[u8]) -> Facts {
        Facts {
            // Without the word `Secret` there is no `kind: Secret`.
            plaintext: (t.is_yaml && self.secret_kind.find(content).is_some())
                .then(|| search::plaintext_secret(&String::from_utf8_lossy(content)))
                .flatten(),
            sops: self
                .sops
                .then(|| self.sops_fact(&t.shown, content))
                .flatten(),
        }
    }

    /// A tracked file's SOPS facts: the rules of a `.sops.yaml`, or the recipients of an
    /// encrypted file.
    fn sops_fact(&self, shown: &str, content: &[u8]) -> Option<SopsFact> {
        let text = std::str::from_utf8(content).ok()?;
        if is_sops_config(shown) {
            Some(match sops::creation_rules(text) {
                Ok(rules) => SopsFact::Rules(rules),
                Err(reason) => SopsFact::Unreadable(reason),
            })
        } else {
            let format = FileFormat::of(shown)?;
            // Only files that mention sops at all are parsed: a large repository costs a byte
            // search per file.
            self.sops_word.find(content)?;
            sops::encrypted(format, text).map(SopsFact::Encrypted)
        }
    }
}

/// The findings of one file, in the order they always came: the token, an age identity, the
/// App key,
/// SOPS facts, a plaintext Secret.
fn report(shown: &str, found: Found, facts: Facts, hygiene: &mut Hygiene) {
    let out = &mut hygiene.findings;
    if found.token {
        out.push(
            Diagnostic::error(Code::TokenInTrackedFile, format!("the token's value is in `{shown}`, a file git tracks"))
                .in_file(shown)
                .with_hint("remove it from that file; if it was ever committed, revoke the token and create a new one"),
        );
    }
    if found.identity {
        out.push(
            Diagnostic::error(Code::AgeKeyInTrackedFile, format!("an age identity is in `{shown}`, a file git tracks"))
                .in_file(shown)
                .with_hint("remove it from that file; if it was ever committed, make a new identity with `age-keygen` and re-encrypt the repository for it"),
        );
    }
    if found.app_key {
        out.push(
            Diagnostic::error(Code::AppKeyInTrackedFile, format!("the GitHub App's private key is in `{shown}`, a file git tracks"))
                .in_file(shown)
                .with_hint("remove it from that file; if it was ever committed, generate a new private key on the App's settings page and delete the old one there"),
        );
    }
    let inventory: &mut Inventory = &mut hygiene.sops;
    match facts.sops {
        Some(SopsFact::Rules(rules)) => inventory
            .rules
            .extend(rules.into_iter().map(|r| (shown.to_string(), r))),
        Some(SopsFact::Unreadable(reason)) => {
            inventory
                .unreadable_configs
                .push((shown.to_string(), reason));
        }
        Some(SopsFact::Encrypted(found)) => inventory.files.push((shown.to_string(), found)),
        None => {}
    }
    if let Some(line) = facts.plaintext {
        out.push(
            Diagnostic::warning(
                Code::PlaintextSecret,
                format!("`{shown}` is a Kubernetes Secret with plaintext `data`/`stringData`"),
            )
            .at(
                shown,
                Position {
                    line,
                    column: 1,
                    width: 12,
                },
            )
            .with_hint("encrypt it with SOPS (`sops --encrypt --in-place`), or keep it out of git"),
        );
    }
}

/// `f` over `items` on `threads` threads (the calling one among them), each with its own state
/// from `init`; the results in the items' order. Threads take chunks of items as they finish
/// the last, so a few large files do not leave a thread idle.
fn par_map<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() < 2 {
        let mut state = init();
        return items.iter().map(|t| f(&mut state, t)).collect();
    }
    let chunk = (items.len() / (threads * 8)).clamp(1, 64);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = init();
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(chunk, Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            let end = (start + chunk).min(items.len());
            let results: Vec<R> = items[start..end].iter().map(|t| f(&mut state, t)).collect();
            done.push((start, results));
        }
    };
    let mut parts = std::thread::scope(|scope| {
        // A thread that cannot be started leaves its share to the others.
        let spawned: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut parts = work();
        for handle in spawned {
            parts.extend(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        parts
    });
    parts.sort_unstable_by_key(|(start, _)| *start);
    parts.into_iter().flat_map(|(_, results)| results).collect()
}

/// A `.sops.yaml`, or a file of a format SOPS encrypts (YAML, JSON, `.env`).
fn is_sops_file(shown: &str) -> bool {
    is_sops_config(shown) || FileFormat::of(shown).is_some()
}

fn is_sops_config(shown: &str) -> bool {
    let name = shown.rsplit('/').next().unwrap_or(shown);
    name == ".sops.yaml" || name == ".sops.yml"
}

fn stat_of_entry(e: &IndexEntry) -> StatData {
    StatData {
        mtime: (e.mtime.seconds() as u32, e.mtime.nanoseconds()),
        ctime: (e.ctime.seconds() as u32, e.ctime.nanoseconds()),
        dev: e.dev,
        ino: e.ino,
        uid: e.uid,
        gid: e.gid,
        size: e.file_size,
    }
}

#[cfg(unix)]
fn stat_of_file(m: &std::fs::Metadata) -> Option<StatData> {
    use std::os::unix::fs::MetadataExt;
    Some(StatData {
        mtime: (m.mtime() as u32, m.mtime_nsec() as u32),
        ctime: (m.ctime() as u32, m.ctime_nsec() as u32),
        dev: m.dev() as u32,
        ino: m.ino() as u32,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size() as u32,
    })
}

#[cfg(not(unix))]
fn stat_of_file(_: &std::fs::Metadata) -> Option<StatData> {
    None
}

#[cfg(unix)]
fn mtime_of(m: &std::fs::Metadata) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.mtime() as u32, m.mtime_nsec() as u32))
}

#[cfg(not(unix))]
fn mtime_of(_: &std::fs::Metadata) -> Option<(u32, u32)> {
    None
}

/// Opens a file lstat found regular, not following a symlink swapped in since and not waiting
/// on a FIFO.
#[cfg(unix)]
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_the_items_order_on_any_number_of_threads() {
        let items: Vec<usize> = (0..1000).collect();
        for threads in [1, 2, 3, 8] {
            let out = par_map(
                &items,
                threads,
                || 0usize,
                |seen, &i| {
                    *seen += 1;
                    i * 2
                },
            );
            assert_eq!(
                out,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "{threads}"
            );
        }
        assert!(par_map(&[] as &[u8], 2, || (), |_, &b| b).is_empty());
    }

    #[test]
    fn each_thread_keeps_its_own_state() {
        let items = vec![1u8; 500];
        // The state counts the items a thread saw; the counts add up to all of them.
        let seen = par_map(
            &items,
            2,
            || 0usize,
            |n, _| {
                *n += 1;
                *n
            },
        );
        assert_eq!(seen.len(), 500);
        assert!(seen.iter().all(|&n| n >= 1));
    }
}
