//! Git's pkt-line framing and the ref advertisement that `git-upload-pack` opens with (protocol
//! v0, what a client that asks for no other version gets). Pure: bytes in, refs out.
//!
//! Each pkt-line is four hex digits giving its length (the four included) and then its payload;
//! `0000` (the flush-pkt) ends the advertisement. The first ref line carries the server's
//! capabilities after a NUL; a repository without refs advertises the single placeholder
//! `<zero id> capabilities^{}` instead. A line `ERR <message>` is the server's refusal.

/// The flush-pkt: the end of the advertisement, and what a client sends to say it wants nothing.
pub const FLUSH: &[u8] = b"0000";

/// The longest pkt-line git sends or accepts: 65520 bytes, the four of the length included.
const MAX_PKT_LEN: usize = 65520;

/// One advertised ref: `refs/heads/main` at `oid` (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The ref's full name, `refs/heads/main`, `HEAD`, or a peeled tag `refs/tags/v1^{}`.
    pub name: String,
    /// The object id in hex (40 digits for SHA-1, 64 for SHA-256 repositories).
    pub oid: String,
}

/// The advertisement is not one `git-upload-pack` would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused with an `ERR` line.
    #[error("the git server refused: {0}")]
    Refused(String),
    /// A length is not four hex digits, or is out of range.
    #[error("the git server sent a malformed pkt-line length `{0}`")]
    BadLength(String),
    /// A ref line is not `<hex id> <name>`.
    #[error("the git server sent a malformed ref line `{0}`")]
    BadRef(String),
    /// The advertisement grew past what this reader keeps.
    #[error("the git server's ref advertisement is larger than {} MiB", .0 >> 20)]
    TooLarge(usize),
}

/// Reads the advertisement as its bytes arrive: [`Advertisement::feed`] each chunk until it says
/// the advertisement is complete, then take [`Advertisement::refs`].
#[derive(Debug)]
pub struct Advertisement {
    pending: Vec<u8>,
    refs: Vec<Ref>,
    lines: usize,
    ref_lines: usize,
    received: usize,
    limit: usize,
    done: bool,
}

impl Advertisement {
    /// A reader that gives up once more than `limit` bytes arrived without the flush-pkt.
    pub fn new(limit: usize) -> Advertisement {
        Advertisement {
            pending: Vec::new(),
            refs: Vec::new(),
            lines: 0,
            ref_lines: 0,
            received: 0,
            limit,
            done: false,
        }
    }

    /// Takes the next bytes; `Ok(true)` once the flush-pkt that ends the advertisement is read
    /// (bytes after it are not part of the advertisement and are ignored).
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, Error> {
        if self.done {
            return Ok(true);
        }
        self.received += data.len();
        if self.received > self.limit {
            return Err(Error::TooLarge(self.limit));
        }
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while let Some(head) = self.pending.get(at..at + 4) {
            let len = parse_len(head)?;
            if len == 0 {
                self.done = true;
                break;
            }
            let Some(payload) = self.pending.get(at + 4..at + len) else {
                break;
            };
            let line = payload.strip_suffix(b"\n").unwrap_or(payload);
            if let Some(message) = line.strip_prefix(b"ERR ") {
                let message = String::from_utf8_lossy(message).into_owned();
                return Err(Error::Refused(message));
            }
            // Protocol v1 (never asked for here) would put its version first.
            if !(self.lines == 0 && line == b"version 1") {
                if let Some(r) = parse_ref(line, self.ref_lines == 0)? {
                    self.refs.push(r);
                }
                self.ref_lines += 1;
            }
            self.lines += 1;
            at += len;
        }
        self.pending.drain(..at);
        Ok(self.done)
    }

    /// Whether the flush-pkt has been read.
    pub fn is_complete(&self) -> bool {
        self.done
    }

    /// The refs read so far, in the server's order (all of them once complete).
    pub fn refs(&self) -> &[Ref] {
        &self.refs
    }

    /// The refs, taken.
    pub fn into_refs(self) -> Vec<Ref> {
        self.refs
    }
}

/// The length of a pkt-line from its four hex digits: 0 (flush) or 4..=65520.
fn parse_len(head: &[u8]) -> Result<usize, Error> {
    let bad = || Error::BadLength(String::from_utf8_lossy(head).into_owned());
    let text = std::str::from_utf8(head).map_err(|_| bad())?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let len = usize::from_str_radix(text, 16).map_err(|_| bad())?;
    match len {
        0 => Ok(0),
        4..=MAX_PKT_LEN => Ok(len),
        _ => Err(bad()),
    }
}

/// One ref line of the advertisement; `None` for the `capabilities^{}` placeholder of an empty
/// repository.
fn parse_ref(line: &[u8], first: bool) -> Result<Option<Ref>, Error> {
    let shown = || String::from_utf8_lossy(line).chars().take(120).collect();
    // The capabilities follow a NUL on the first ref line only; they are not needed here.
    let refline = match memchr::memchr(0, line) {
        Some(nul) if first => &line[..nul],
        Some(_) => return Err(Error::BadRef(shown())),
        None => line,
    };
    let text = std::str::from_utf8(refline).map_err(|_| Error::BadRef(shown()))?;
    let (oid, name) = text.split_once(' ').ok_or_else(|| Error::BadRef(shown()))?;
    let hex = oid.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || !matches!(oid.len(), 40 | 64) || name.is_empty() || name.contains([' ', '\0']) {
        return Err(Error::BadRef(shown()));
    }
    if name == "capabilities^{}" {
        return Ok(None);
    }
    Ok(Some(Ref {
        name: name.to_owned(),
        oid: oid.to_ascii_lowercase(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(payload: &str) -> String {
        format!("{:04x}{payload}", payload.len() + 4)
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn read_all(bytes: &[u8]) -> Result<(bool, Vec<Ref>), Error> {
        let mut ad = Advertisement::new(1 << 20);
        let done = ad.feed(bytes)?;
        Ok((done, ad.into_refs()))
    }

    #[test]
    fn refs_with_capabilities_on_the_first_line() {
        let text = [
            pkt(&format!(
                "{A} HEAD\0multi_ack side-band-64k symref=HEAD:refs/heads/main\n"
            )),
            pkt(&format!("{A} refs/heads/main\n")),
            pkt(&format!("{B} refs/tags/v1\n")),
            pkt(&format!("{A} refs/tags/v1^{{}}")),
            "0000".to_owned(),
        ]
        .concat();
        let (done, refs) = read_all(text.as_bytes()).unwrap();
        assert!(done);
        let names: Vec<(&str, &str)> = refs
            .iter()
            .map(|r| (r.name.as_str(), r.oid.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("HEAD", A),
                ("refs/heads/main", A),
                ("refs/tags/v1", B),
                ("refs/tags/v1^{}", A)
            ]
        );
    }

    #[test]
    fn an_empty_repository_advertises_no_ref() {
        let zero = "0".repeat(40);
        let text = pkt(&format!("{zero} capabilities^{{}}\0agent=git/2.47\n")) + "0000";
        assert_eq!(read_all(text.as_bytes()).unwrap(), (true, vec![]));
        // A version line before it (protocol v1) names no ref either.
        let text = pkt("version 1\n") + &text;
        assert_eq!(read_all(text.as_bytes()).unwrap(), (true, vec![]));
    }

    #[test]
    fn bytes_may_arrive_in_any_pieces() {
        let text = [
            pkt(&format!("{A} refs/heads/main\0caps\n")),
            pkt(&format!("{B} refs/heads/dev\n")),
            "0000".to_owned(),
            "trailing bytes".to_owned(),
        ]
        .concat();
        for size in [1, 3, 4, 5, 7, 64] {
            let mut ad = Advertisement::new(1 << 20);
            let mut done = false;
            for chunk in text.as_bytes().chunks(size) {
                done = ad.feed(chunk).unwrap();
                if done {
                    break;
                }
            }
            assert!(done && ad.is_complete(), "chunks of {size}");
            assert_eq!(ad.refs().len(), 2, "chunks of {size}");
            assert_eq!(ad.refs()[1].name, "refs/heads/dev");
        }
        let mut ad = Advertisement::new(1 << 20);
        assert!(!ad.feed(&text.as_bytes()[..10]).unwrap(), "not complete");
        assert!(!ad.is_complete());
    }

    #[test]
    fn malformed_advertisements_are_errors() {
        assert_eq!(
            read_all(pkt("ERR access denied").as_bytes()),
            Err(Error::Refused("access denied".into()))
        );
        for bad in ["zzzz", "0001", "0003", "fff1"] {
            assert!(
                matches!(read_all(bad.as_bytes()), Err(Error::BadLength(_))),
                "{bad}"
            );
        }
        for line in [
            format!("{A}refs/heads/main"),
            "abc refs/heads/main".to_owned(),
            format!("{A} "),
            format!("{} refs/heads/main", "g".repeat(40)),
        ] {
            assert!(
                matches!(read_all(pkt(&line).as_bytes()), Err(Error::BadRef(_))),
                "{line}"
            );
        }
        // A NUL past the first ref line is not git's.
        let text = pkt(&format!("{A} refs/heads/a\0caps")) + &pkt(&format!("{B} refs/heads/b\0x"));
        assert!(matches!(read_all(text.as_bytes()), Err(Error::BadRef(_))));
    }

    #[test]
    fn a_limit_bounds_what_is_kept() {
        let mut ad = Advertisement::new(150);
        let line = pkt(&format!("{A} refs/heads/main\n"));
        assert!(!ad.feed(line.as_bytes()).unwrap());
        assert!(!ad.feed(line.as_bytes()).unwrap());
        assert_eq!(ad.feed(line.as_bytes()), Err(Error::TooLarge(150)));
    }
}
