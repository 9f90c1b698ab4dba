//! Finding the service keytab at startup, and saying precisely why each candidate failed.
//!
//! With `kerberos.keytab` set, that file alone is tried. Otherwise the search order of
//! DESIGN.md: `$KRB5_KTNAME` (a `FILE:` prefix is stripped), `/etc/virtgate/krb5.keytab`,
//! `/etc/krb5.keytab`. Each candidate is opened for real as the gateway's user (missing,
//! unreadable), read as a keytab to list the principals it holds (never the keys), and then
//! handed to GSS-API (the `gss_ffi` module) to acquire the acceptor credential for
//! `SERVICE@host`, which fails when it holds no key for `SERVICE/host@REALM`. When nothing
//! works, [`KeytabError`] lists every path with its reason, and its hint says how to create
//! the principal and the keytab.

use std::ffi::OsString;
use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Where the gateway looks when `kerberos.keytab` is not set, after `$KRB5_KTNAME`.
pub const DEFAULT_KEYTABS: [&str; 2] = ["/etc/virtgate/krb5.keytab", "/etc/krb5.keytab"];

/// A keytab larger than this is not read (real ones are a few KiB).
const MAX_KEYTAB_BYTES: u64 = 16 << 20;

/// Where a candidate path came from, for the error listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `kerberos.keytab` in the configuration.
    Config,
    /// The `KRB5_KTNAME` environment variable.
    Env,
    /// One of [`DEFAULT_KEYTABS`].
    Default,
}

/// One path to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The file.
    pub path: PathBuf,
    /// Why it is tried.
    pub origin: Origin,
}

/// The paths to try, in order: the configured one alone, else `$KRB5_KTNAME` (without
/// `FILE:`) and the defaults, each once. Another keytab type in `KRB5_KTNAME`
/// (`MEMORY:`, `KEYRING:`) is returned as is and fails as "not a file keytab".
pub fn candidates(configured: Option<&Path>, ktname: Option<OsString>) -> Vec<Candidate> {
    if let Some(p) = configured {
        return vec![Candidate {
            path: p.to_owned(),
            origin: Origin::Config,
        }];
    }
    let mut out = Vec::new();
    if let Some(v) = ktname.filter(|v| !v.is_empty()) {
        let text = v.to_string_lossy();
        let path = match text.strip_prefix("FILE:") {
            Some(rest) => PathBuf::from(rest),
            None => PathBuf::from(v),
        };
        out.push(Candidate {
            path,
            origin: Origin::Env,
        });
    }
    for d in DEFAULT_KEYTABS {
        if !out.iter().any(|c| c.path == Path::new(d)) {
            out.push(Candidate {
                path: d.into(),
                origin: Origin::Default,
            });
        }
    }
    out
}

/// Why one keytab candidate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeytabFailure {
    /// No such file.
    Missing,
    /// The gateway's user may not read it (or another I/O error while reading it).
    Unreadable(String),
    /// `KRB5_KTNAME` names a keytab that is not a file (`MEMORY:x`), or a folder.
    NotAFile,
    /// The file is not an MIT keytab.
    NotAKeytab(String),
    /// It holds no key for the service principal.
    NoKey {
        /// The principal looked for, `HTTP/host@REALM`.
        wanted: String,
        /// The principals the keytab does hold.
        holds: Vec<String>,
        /// GSS-API's message.
        gss: String,
    },
}

impl fmt::Display for KeytabFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeytabFailure::Missing => f.write_str("missing"),
            KeytabFailure::Unreadable(e) => {
                write!(f, "unreadable by the gateway's user")?;
                if let Ok(m) = std::fs::metadata("/proc/self") {
                    write!(f, " (uid {})", m.uid())?;
                }
                write!(f, ": {e}")
            }
            KeytabFailure::NotAFile => f.write_str("not a keytab file"),
            KeytabFailure::NotAKeytab(why) => write!(f, "not a keytab ({why})"),
            KeytabFailure::NoKey { wanted, holds, gss } => {
                write!(f, "no key for {wanted}")?;
                match holds.as_slice() {
                    [] => write!(f, " (the keytab is empty)")?,
                    h => write!(f, " (it holds {})", h.join(", "))?,
                }
                write!(f, "; GSS-API: {gss}")
            }
        }
    }
}

/// One path tried, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The candidate.
    pub candidate: Candidate,
    /// What was wrong with it.
    pub failure: KeytabFailure,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.candidate.path.display())?;
        if self.candidate.origin == Origin::Env {
            write!(f, " (from $KRB5_KTNAME)")?;
        }
        write!(f, ": {}", self.failure)
    }
}

/// No usable keytab: the configured one failed, or every candidate of the search did.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeytabError {
    /// `kerberos.keytab` is set and cannot be used.
    #[error("kerberos.keytab {attempt}")]
    Configured {
        /// The path and its failure.
        attempt: Attempt,
        /// The service principal, `HTTP/host`, for the hint.
        service: String,
    },
    /// Nothing in the search order worked.
    #[error(
        "no usable keytab for the Kerberos service {service}; tried:{}",
        list(tried)
    )]
    Searched {
        /// Every path, in order.
        tried: Vec<Attempt>,
        /// The service principal, `HTTP/host`.
        service: String,
    },
}

fn list(tried: &[Attempt]) -> String {
    tried.iter().map(|a| format!("\n  {a}")).collect()
}

impl KeytabError {
    /// How to fix the file, or to create the principal and keytab.
    pub fn hint(&self) -> String {
        let create = |service: &str, path: &str| {
            format!(
                "create the service principal and its keytab: `kadmin -q \"addprinc -randkey {service}\"` \
                 then `kadmin -q \"ktadd -k {path} {service}\"`, readable only by the gateway's user"
            )
        };
        let readable = |path: &Path| {
            format!(
                "let the gateway's user read {0} (e.g. `chown virtgate {0}; chmod 0600 {0}`)",
                path.display()
            )
        };
        let host = "set `host` in [kerberos] if the principal uses another host name";
        match self {
            KeytabError::Configured { attempt, service } => {
                let path = &attempt.candidate.path;
                match &attempt.failure {
                    KeytabFailure::Unreadable(_) => readable(path),
                    KeytabFailure::NoKey { .. } => format!(
                        "add the key to it: `kadmin -q \"ktadd -k {} {service}\"` (after \
                         `addprinc -randkey {service}` if the principal does not exist); or {host}",
                        path.display()
                    ),
                    _ => format!(
                        "{}; or fix `keytab` in [kerberos]",
                        create(service, &path.display().to_string())
                    ),
                }
            }
            KeytabError::Searched { tried, service } => {
                let mut hint = String::new();
                if let Some(a) = tried
                    .iter()
                    .find(|a| matches!(a.failure, KeytabFailure::Unreadable(_)))
                {
                    hint = format!("{}; or ", readable(&a.candidate.path));
                }
                format!(
                    "{hint}{}; or point `keytab = \"PATH\"` in [kerberos] at an existing keytab; {host}",
                    create(service, DEFAULT_KEYTABS[0])
                )
            }
        }
    }
}

/// Open `path` as the gateway's user and list the principals of the keytab in it.
pub fn read_principals(path: &Path) -> Result<Vec<String>, KeytabFailure> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeytabFailure::Missing,
        _ => KeytabFailure::Unreadable(e.to_string()),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| KeytabFailure::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(KeytabFailure::NotAFile);
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEYTAB_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| KeytabFailure::Unreadable(e.to_string()))?;
    parse_principals(&bytes).map_err(KeytabFailure::NotAKeytab)
}

/// The distinct principals (`HTTP/host@REALM`) in an MIT keytab (format 0x0502; 0x0501,
/// native byte order, is accepted but not listed). Keys are skipped, never copied.
pub fn parse_principals(bytes: &[u8]) -> Result<Vec<String>, String> {
    match bytes {
        [] => return Err("empty file".into()),
        [5, 2, ..] => {}
        [5, 1, ..] => return Ok(vec![]),
        [5, v, ..] => return Err(format!("unknown keytab version 5.{v}")),
        _ => return Err("no keytab header (0x05 0x02)".into()),
    }
    let mut out: Vec<String> = Vec::new();
    let mut rest = &bytes[2..];
    while rest.len() >= 4 {
        let size = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        let len = size.unsigned_abs() as usize;
        if size == 0 {
            break;
        }
        let entry = rest.get(..len).ok_or("truncated entry")?;
        rest = &rest[len..];
        if size < 0 {
            continue; // a hole left by a deleted entry
        }
        let p = entry_principal(entry).ok_or("malformed entry")?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The principal at the start of one keytab entry.
fn entry_principal(entry: &[u8]) -> Option<String> {
    fn u16_at(b: &[u8], at: usize) -> Option<usize> {
        Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize)
    }
    fn counted(b: &[u8], at: &mut usize) -> Option<String> {
        let n = u16_at(b, *at)?;
        let s = b.get(*at + 2..*at + 2 + n)?;
        *at += 2 + n;
        Some(String::from_utf8_lossy(s).into_owned())
    }
    let count = u16_at(entry, 0)?;
    let mut at = 2;
    let realm = counted(entry, &mut at)?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        parts.push(counted(entry, &mut at)?);
    }
    Some(format!("{}@{realm}", parts.join("/")))
}

/// The failure for a keytab that could be read but gave no credential: "no key" with the
/// principal spelled for the admin (`HTTP/host@REALM`, the realm taken from the keytab's
/// own principals when they agree on one).
pub fn no_key(service: &str, host: &str, holds: Vec<String>, gss: String) -> KeytabFailure {
    let mut realms = holds
        .iter()
        .filter_map(|p| p.rsplit_once('@').map(|(_, r)| r));
    let realm = match realms.next() {
        Some(first) if realms.all(|r| r == first) => first.to_owned(),
        _ => "REALM".to_owned(),
    };
    KeytabFailure::NoKey {
        wanted: format!("{service}/{}@{realm}", host.to_ascii_lowercase()),
        holds,
        gss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keytab entry as MIT writes it (format 0x0502), with a dummy key.
    fn entry(realm: &str, parts: &[&str]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend((parts.len() as u16).to_be_bytes());
        for s in std::iter::once(&realm).chain(parts) {
            e.extend((s.len() as u16).to_be_bytes());
            e.extend(s.as_bytes());
        }
        e.extend(1u32.to_be_bytes()); // name type
        e.extend(0u32.to_be_bytes()); // timestamp
        e.push(2); // kvno
        e.extend(18u16.to_be_bytes()); // aes256
        e.extend(32u16.to_be_bytes());
        e.extend([0xAA; 32]);
        let mut out = (e.len() as i32).to_be_bytes().to_vec();
        out.extend(e);
        out
    }

    #[test]
    fn search_order_and_ktname_prefix() {
        let paths = |c: Vec<Candidate>| c.into_iter().map(|c| c.path).collect::<Vec<_>>();
        assert_eq!(
            paths(candidates(None, Some("FILE:/k/a.keytab".into()))),
            [
                PathBuf::from("/k/a.keytab"),
                "/etc/virtgate/krb5.keytab".into(),
                "/etc/krb5.keytab".into()
            ]
        );
        assert_eq!(
            paths(candidates(None, Some("/etc/krb5.keytab".into()))),
            [
                PathBuf::from("/etc/krb5.keytab"),
                "/etc/virtgate/krb5.keytab".into()
            ]
        );
        assert_eq!(candidates(None, Some("".into())).len(), 2);
        let only = candidates(Some(Path::new("/x.keytab")), Some("/y".into()));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].origin, Origin::Config);
    }

    #[test]
    fn principals_are_listed_without_keys() {
        let mut kt = vec![5, 2];
        kt.extend(entry("EXAMPLE.ORG", &["HTTP", "gw"]));
        kt.extend(entry("EXAMPLE.ORG", &["HTTP", "gw"]));
        kt.extend((-7i32).to_be_bytes());
        kt.extend([0; 7]);
        kt.extend(entry("EXAMPLE.ORG", &["host", "gw"]));
        assert_eq!(
            parse_principals(&kt).unwrap(),
            ["HTTP/gw@EXAMPLE.ORG", "host/gw@EXAMPLE.ORG"]
        );
        assert!(parse_principals(b"-----BEGIN")
            .unwrap_err()
            .contains("header"));
        assert!(parse_principals(&kt[..kt.len() - 3]).is_err());
    }

    #[test]
    fn missing_unreadable_and_folder_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.keytab");
        assert_eq!(read_principals(&missing), Err(KeytabFailure::Missing));
        assert_eq!(read_principals(dir.path()), Err(KeytabFailure::NotAFile));
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a keytab").unwrap();
        assert!(matches!(
            read_principals(&junk),
            Err(KeytabFailure::NotAKeytab(_))
        ));
        // Permission checks cannot be seen as root; the text is what the listing shows.
        let denied = KeytabFailure::Unreadable("Permission denied (os error 13)".into());
        assert!(denied
            .to_string()
            .starts_with("unreadable by the gateway's user"));
    }

    #[test]
    fn the_error_lists_every_path_with_its_reason_and_hints_kadmin() {
        let e = KeytabError::Searched {
            service: "HTTP/gw".into(),
            tried: vec![
                Attempt {
                    candidate: Candidate {
                        path: "/k/env.keytab".into(),
                        origin: Origin::Env,
                    },
                    failure: KeytabFailure::Missing,
                },
                Attempt {
                    candidate: Candidate {
                        path: "/etc/krb5.keytab".into(),
                        origin: Origin::Default,
                    },
                    failure: no_key(
                        "HTTP",
                        "GW",
                        vec!["host/gw@EXAMPLE.ORG".into()],
                        "No key table entry found".into(),
                    ),
                },
            ],
        };
        let text = e.to_string();
        assert_eq!(
            text,
            "no usable keytab for the Kerberos service HTTP/gw; tried:\n  \
             /k/env.keytab (from $KRB5_KTNAME): missing\n  \
             /etc/krb5.keytab: no key for HTTP/gw@EXAMPLE.ORG (it holds host/gw@EXAMPLE.ORG); \
             GSS-API: No key table entry found"
        );
        let hint = e.hint();
        assert!(hint.contains("addprinc -randkey HTTP/gw"), "{hint}");
        assert!(
            hint.contains("ktadd -k /etc/virtgate/krb5.keytab HTTP/gw"),
            "{hint}"
        );
        assert!(hint.contains("keytab = \"PATH\""), "{hint}");
    }
}
