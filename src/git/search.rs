//! The pure parts of the tracked-file scan: the secrets searched for, compiled once; whether a
//! work-tree file is the one the index entry was made from; plaintext Secrets; the bounded read.

use std::io::Read;

use aho_corasick::AhoCorasick;
use memchr::memmem::Finder;

/// Which kinds of secret a content holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub token: bool,
    pub identity: bool,
    /// A line of the GitHub App's private key.
    pub app_key: bool,
}

impl Found {
    pub fn or(self, other: Found) -> Found {
        Found {
            token: self.token || other.token,
            identity: self.identity || other.identity,
            app_key: self.app_key || other.app_key,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Token,
    Identity,
    AppKey,
}

enum Searcher {
    Nothing,
    One(Box<Finder<'static>>, Kind),
    Many(AhoCorasick, Vec<Kind>),
}

/// The token, the age identities and the App key's lines, in one searcher built once for every file: a memmem
/// finder for one needle, an Aho-Corasick automaton for several.
pub struct Needles {
    searcher: Searcher,
    token: bool,
    identity: bool,
    app_key: bool,
}

impl Needles {
    /// `identities` as age writes them; a hand-copied one may be lower-case, so both are sought.
    /// `app_key`: lines of the GitHub App's private key (`AppKey::needles`).
    pub fn new(token: Option<&str>, identities: &[&str], app_key: &[String]) -> Needles {
        let mut patterns: Vec<(Vec<u8>, Kind)> = Vec::new();
        if let Some(t) = token {
            patterns.push((t.as_bytes().to_vec(), Kind::Token));
        }
        for id in identities {
            patterns.push((id.as_bytes().to_vec(), Kind::Identity));
            patterns.push((id.to_ascii_lowercase().into_bytes(), Kind::Identity));
        }
        for line in app_key {
            patterns.push((line.as_bytes().to_vec(), Kind::AppKey));
        }
        let searcher = match patterns.len() {
            0 => Searcher::Nothing,
            1 => {
                let (p, kind) = &patterns[0];
                Searcher::One(Box::new(Finder::new(p).into_owned()), *kind)
            }
            _ => {
                let kinds = patterns.iter().map(|(_, k)| *k).collect();
                // A few short patterns: within every limit of the builder.
                let ac = AhoCorasick::new(patterns.iter().map(|(p, _)| p))
                    .expect("a few short patterns build an automaton");
                Searcher::Many(ac, kinds)
            }
        };
        Needles {
            searcher,
            token: token.is_some(),
            identity: !identities.is_empty(),
            app_key: !app_key.is_empty(),
        }
    }

    /// Whether there is anything to search for.
    pub fn any(&self) -> bool {
        self.token || self.identity || self.app_key
    }

    /// Whether `found` already holds every kind searched for (no other content can add to it).
    pub fn complete(&self, found: Found) -> bool {
        (found.token || !self.token)
            && (found.identity || !self.identity)
            && (found.app_key || !self.app_key)
    }

    /// The kinds `content` holds, in one pass.
    pub fn search(&self, content: &[u8]) -> Found {
        let mut found = Found::default();
        let mark = |found: &mut Found, kind: Kind| match kind {
            Kind::Token => found.token = true,
            Kind::Identity => found.identity = true,
            Kind::AppKey => found.app_key = true,
        };
        match &self.searcher {
            Searcher::Nothing => {}
            Searcher::One(finder, kind) => {
                if finder.find(content).is_some() {
                    mark(&mut found, *kind);
                }
            }
            Searcher::Many(ac, kinds) => {
                for m in ac.find_overlapping_iter(content) {
                    mark(&mut found, kinds[m.pattern().as_usize()]);
                    if self.complete(found) {
                        break;
                    }
                }
            }
        }
        found
    }
}

/// The stat data git keeps in an index entry, truncated as git truncates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatData {
    pub mtime: (u32, u32),
    pub ctime: (u32, u32),
    pub dev: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

/// Whether the work-tree file (`disk`) is the one the index entry (`entry`) was made from, as
/// git itself decides it: the same stat data, and the entry not "racily clean" (its mtime
/// before the index file's, `index_mtime`, so a change in the same clock tick cannot hide).
/// Anything else, an unknown index time included, may differ and is hashed.
pub fn unchanged(entry: StatData, disk: StatData, index_mtime: Option<(u32, u32)>) -> bool {
    index_mtime.is_some_and(|index| entry == disk && entry.mtime < index)
}

/// Reads `file` into `buf` (kept for the next file) and gives the length read, or `None` when
/// it holds more than `max` bytes. `expected` is the size lstat gave: the buffer has room for
/// one byte more, so a regular file of that size is read in one `read` (the short read that
/// reaches `expected` is its end). Never reads more than `max + 1` bytes.
pub fn read_bounded(
    file: &mut impl Read,
    expected: usize,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    let limit = max.saturating_add(1);
    let mut room = expected.saturating_add(1).min(limit);
    let mut filled = 0;
    loop {
        if filled == room {
            if room == limit {
                return Ok(None);
            }
            room = (room * 2).min(limit);
        }
        if buf.len() < room {
            buf.resize(room, 0);
        }
        match file.read(&mut buf[filled..room]) {
            Ok(0) => return Ok(Some(filled)),
            Ok(n) => {
                filled += n;
                if filled >= expected && filled < room {
                    return Ok(Some(filled));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The line of `kind: Secret` of the first document that has data and no `sops:` key.
pub fn plaintext_secret(text: &str) -> Option<usize> {
    let mut kind_line = None;
    let (mut has_data, mut has_sops) = (false, false);
    for (i, raw) in text.lines().chain(std::iter::once("---")).enumerate() {
        let line = raw.trim_end();
        if line == "---" || line.starts_with("--- ") {
            if let (Some(k), true, false) = (kind_line, has_data, has_sops) {
                return Some(k);
            }
            kind_line = None;
            has_data = false;
            has_sops = false;
            continue;
        }
        // Only top-level keys count.
        if let Some(value) = line.strip_prefix("kind:") {
            if value.trim().trim_matches(['"', '\'']) == "Secret" {
                kind_line = Some(i + 1);
            }
        } else if line.starts_with("data:") || line.starts_with("stringData:") {
            has_data = true;
        } else if line.starts_with("sops:") {
            has_sops = true;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plaintext_secrets_only() {
        let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nstringData:\n  a: b\n";
        assert_eq!(plaintext_secret(plain), Some(2));
        let sops = format!("{plain}sops:\n  version: 3\n");
        assert_eq!(plaintext_secret(&sops), None);
        let cm = "kind: ConfigMap\ndata:\n  a: b\n";
        assert_eq!(plaintext_secret(cm), None);
        let second = format!("{cm}---\n{plain}");
        assert_eq!(plaintext_secret(&second), Some(6));
    }

    const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    const ID: &str = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";

    #[test]
    fn one_searcher_tells_the_kinds_apart() {
        let both = Needles::new(Some(TOKEN), &[ID], &[]);
        let t = Found {
            token: true,
            ..Found::default()
        };
        let i = Found {
            identity: true,
            ..Found::default()
        };
        assert_eq!(both.search(b"nothing here"), Found::default());
        assert_eq!(both.search(format!("x {TOKEN} y").as_bytes()), t);
        assert_eq!(both.search(ID.as_bytes()), i);
        assert_eq!(
            both.search(ID.to_ascii_lowercase().as_bytes()),
            i,
            "a lower-case copy"
        );
        // Overlapping needles are both found.
        let glued = format!("{}{}", &TOKEN[..10], &TOKEN[10..]);
        assert_eq!(both.search(format!("{ID}{glued}").as_bytes()), t.or(i));
        assert!(both.complete(t.or(i)) && !both.complete(t) && !both.complete(i));
        let token_only = Needles::new(Some(TOKEN), &[], &[]);
        assert!(token_only.complete(t) && token_only.any());
        assert_eq!(token_only.search(ID.as_bytes()), Found::default());
        let none = Needles::new(None, &[], &[]);
        assert!(!none.any() && none.complete(Found::default()));
        assert_eq!(none.search(TOKEN.as_bytes()), Found::default());
        // The App key's lines beside the token: a third kind, told apart in the same pass.
        let line = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun";
        let with_key = Needles::new(Some(TOKEN), &[], &[line.to_string()]);
        let k = Found {
            app_key: true,
            ..Found::default()
        };
        assert_eq!(with_key.search(format!("  {line}\n").as_bytes()), k);
        assert_eq!(with_key.search(TOKEN.as_bytes()), t);
        assert!(!with_key.complete(t) && with_key.complete(t.or(k)));
    }

    fn stat(mtime: (u32, u32)) -> StatData {
        StatData {
            mtime,
            ctime: mtime,
            dev: 1,
            ino: 2,
            uid: 3,
            gid: 4,
            size: 5,
        }
    }

    #[test]
    fn only_a_file_with_the_entrys_stat_data_before_the_index_is_unchanged() {
        let entry = stat((100, 5));
        assert!(unchanged(entry, entry, Some((100, 6))));
        assert!(!unchanged(entry, entry, Some((100, 5))), "racily clean");
        assert!(!unchanged(entry, entry, Some((99, 0))), "racily clean");
        assert!(!unchanged(entry, entry, None));
        let mut other = entry;
        other.size = 6;
        assert!(!unchanged(entry, other, Some((200, 0))));
        let mut other = entry;
        other.ctime = (101, 0);
        assert!(!unchanged(entry, other, Some((200, 0))));
        let mut other = entry;
        other.ino = 9;
        assert!(!unchanged(entry, other, Some((200, 0))));
    }

    /// Gives at most `step` bytes a read, and counts the reads.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let n = self.data.len().min(out.len()).min(self.step);
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_all(data: &[u8], expected: usize, max: usize, step: usize) -> (Option<Vec<u8>>, usize) {
        let mut r = Trickle {
            data,
            step,
            reads: 0,
        };
        let mut buf = vec![7; 3];
        let got = read_bounded(&mut r, expected, max, &mut buf).unwrap();
        (got.map(|n| buf[..n].to_vec()), r.reads)
    }

    #[test]
    fn a_file_of_the_expected_size_is_read_in_one_read_and_never_past_the_bound() {
        let data: Vec<u8> = (0..100u8).collect();
        assert_eq!(
            read_all(&data, 100, 1000, usize::MAX),
            (Some(data.clone()), 1)
        );
        // Short reads, a file grown or shrunk since lstat: read to its end.
        assert_eq!(read_all(&data, 100, 1000, 7).0, Some(data.clone()));
        assert_eq!(read_all(&data, 10, 1000, usize::MAX).0, Some(data.clone()));
        assert_eq!(read_all(&data, 500, 1000, usize::MAX).0, Some(data.clone()));
        assert_eq!(read_all(b"", 0, 1000, usize::MAX), (Some(Vec::new()), 1));
        // Exactly the bound is fine; one byte more is too large, and no more than that is read.
        assert_eq!(read_all(&data, 100, 100, usize::MAX).0, Some(data.clone()));
        assert_eq!(read_all(&data, 10, 99, usize::MAX).0, None);
        let endless = std::io::repeat(b'a');
        let mut bounded = endless.take(10_000);
        let mut buf = Vec::new();
        assert_eq!(read_bounded(&mut bounded, 0, 50, &mut buf).unwrap(), None);
        assert_eq!(10_000 - bounded.limit(), 51, "read max + 1 bytes, no more");
    }
}
