//! `~/.ssh/known_hosts`, read and written the way OpenSSH does, so that a host the user has
//! already reached with `ssh` is known to virtgate too and the other way round.
//!
//! A host is named `host` on port 22 and `[host]:port` otherwise (IPv6 without brackets on
//! port 22: `::1`, `[::1]:2222`). An entry's host field is a comma-separated list of
//! patterns: plain names, `*`/`?` wildcards, `!negations` (a matching negation excludes the
//! entry) and hashed names `|1|base64(salt)|base64(HMAC-SHA1(salt, name))` as written by
//! `HashKnownHosts yes` / `ssh-keygen -H`. `@revoked` entries refuse their key;
//! `@cert-authority` entries are skipped (host certificates are not asked for). Comments,
//! blank lines and unparsable lines are skipped, but still counted, so line numbers match
//! what an editor and `ssh-keygen -F` show.
//!
//! The verdict for a presented key is, in order: revoked, known (some entry has exactly this
//! key), changed (an entry has another key of the same type: its line is reported), unknown.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use russh::keys::ssh_key::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

use crate::error::{io_reason, SshFailure};
use crate::url::Host;

/// What known_hosts says about a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An entry for this host has exactly this key.
    Known {
        /// 1-based line of that entry.
        line: usize,
    },
    /// No entry for this host has a key of this type.
    Unknown {
        /// Key types that entries for this host do have.
        other_types: Vec<String>,
    },
    /// An entry for this host has a different key of the same type.
    Changed {
        /// 1-based line of the (first) old entry.
        line: usize,
    },
    /// An `@revoked` entry has this key.
    Revoked {
        /// 1-based line of the `@revoked` entry.
        line: usize,
    },
}

/// What an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// A plain host key.
    None,
    /// `@cert-authority`: a CA for host certificates (not used here).
    CertAuthority,
    /// `@revoked`: this key must never be accepted.
    Revoked,
}

/// One usable line of the file.
#[derive(Debug, Clone)]
struct Entry {
    /// 1-based line number.
    line: usize,
    /// `@cert-authority`, `@revoked` or none.
    marker: Marker,
    /// The host patterns, as written.
    hosts: String,
    /// The key.
    key: PublicKey,
}

/// The parsed file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    /// Where it is (for messages); it may not exist.
    pub path: PathBuf,
    /// Its usable entries.
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Read `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<KnownHosts, SshFailure> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(KnownHosts::parse(path, &text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::parse(path, "")),
            Err(e) => Err(SshFailure::KnownHosts {
                action: "read",
                path: path.to_owned(),
                reason: io_reason(&e),
            }),
        }
    }

    /// Parse the text of a known_hosts file.
    pub fn parse(path: &Path, text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut fields = l.split_whitespace();
            let mut first = fields.next().unwrap_or("");
            let marker = match first {
                "@cert-authority" => Marker::CertAuthority,
                "@revoked" => Marker::Revoked,
                m if m.starts_with('@') => continue,
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next().unwrap_or("");
            }
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                continue;
            };
            match PublicKey::from_openssh(&format!("{kind} {blob}")) {
                Ok(key) => entries.push(Entry {
                    line: i + 1,
                    marker,
                    hosts: first.to_owned(),
                    key,
                }),
                Err(e) => tracing::debug!(line = i + 1, error = %e, "skipping a known_hosts line"),
            }
        }
        KnownHosts {
            path: path.to_owned(),
            entries,
        }
    }

    /// What the file says about `key` presented by the host known as `name`.
    pub fn check(&self, name: &str, key: &PublicKey) -> Verdict {
        let mut changed = None;
        let mut known = None;
        let mut other_types: Vec<String> = Vec::new();
        for e in self.entries.iter().filter(|e| host_matches(&e.hosts, name)) {
            let same_key = e.key.key_data() == key.key_data();
            match e.marker {
                Marker::Revoked if same_key => return Verdict::Revoked { line: e.line },
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None if same_key => {
                    known.get_or_insert(e.line);
                }
                Marker::None if e.key.algorithm() == key.algorithm() => {
                    changed.get_or_insert(e.line);
                }
                Marker::None => {
                    let t = e.key.algorithm().to_string();
                    if !other_types.contains(&t) {
                        other_types.push(t);
                    }
                }
            }
        }
        match (known, changed) {
            (Some(line), _) => Verdict::Known { line },
            (None, Some(line)) => Verdict::Changed { line },
            (None, None) => Verdict::Unknown { other_types },
        }
    }

    /// Key types recorded for `name`, in file order: the handshake asks for these first (as
    /// OpenSSH does), so a host known by its ECDSA key is not taken for an unknown one
    /// because it would rather present Ed25519.
    pub fn algorithms_for(&self, name: &str) -> Vec<Algorithm> {
        let mut v: Vec<Algorithm> = Vec::new();
        for e in &self.entries {
            if e.marker == Marker::None && host_matches(&e.hosts, name) {
                let a = e.key.algorithm();
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }
}

/// The name known_hosts uses for `host` on `port`.
pub fn host_name(host: &Host, port: u16) -> String {
    let bare = match host {
        Host::Dns(n) => n.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ip(ip) => ip.to_string(),
    };
    if port == 22 {
        bare
    } else {
        format!("[{bare}]:{port}")
    }
}

/// `SHA256:…` as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Append `name KEYTYPE BASE64` to the file, creating `~/.ssh` (0700) and the file (0600)
/// when missing.
pub fn append(path: &Path, name: &str, key: &PublicKey) -> Result<(), SshFailure> {
    let fail = |e: std::io::Error| SshFailure::KnownHosts {
        action: "add the host key to",
        path: path.to_owned(),
        reason: io_reason(&e),
    };
    let mut plain = key.clone();
    plain.set_comment("");
    let text = plain
        .to_openssh()
        .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(fail)?;
        }
    }
    let ends_in_newline = match std::fs::read(path) {
        Ok(bytes) => bytes.last().is_none_or(|b| *b == b'\n'),
        Err(_) => true,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    let lead = if ends_in_newline { "" } else { "\n" };
    writeln!(f, "{lead}{name} {}", text.trim()).map_err(fail)?;
    Ok(())
}

/// Whether the comma-separated `patterns` select `name` (a matching `!negation` wins).
fn host_matches(patterns: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(hashed) = p.strip_prefix("|1|") {
            if hashed_matches(hashed, &name) {
                matched = true;
            }
        } else if let Some(neg) = p.strip_prefix('!') {
            if glob(&neg.to_ascii_lowercase(), &name) {
                return false;
            }
        } else if glob(&p.to_ascii_lowercase(), &name) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash` (both base64) against HMAC-SHA1 keyed with the salt over the name.
fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // made with ssh-keygen; the hashed lines with `ssh-keygen -H` from plain lines for
    // hv1.example.org (A), [127.0.0.1]:2299 (A) and ::1 (B)
    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJI2ln0UDYwrQBMZbUMUfgOObmpn+VDcFT1/SBO12OTe";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFtFa+BJXYXBrF5Xr3llzhInBUzYha98BGK57qDoXbVe";
    const C: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKr9AM7dWWGSp/B1TRBo9lzgpiBJ585A63QC5JWjn7f3+LVfmqNJ1flMBkzFl4TB8dIedpVZo+fQnPAkXLPDLLM=";
    const HASHED: &str = "\
|1|ni/P7Ko0afjKr+PtV6lnY4llG30=|6CFYG/O0JZae7ZPvktLftM2RZPs= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJI2ln0UDYwrQBMZbUMUfgOObmpn+VDcFT1/SBO12OTe
|1|bCvTdHpM4W5GfVywTGBxH1QRxCM=|eVzK0rAHv2ii0d5t4Gp1hI8YrhQ= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJI2ln0UDYwrQBMZbUMUfgOObmpn+VDcFT1/SBO12OTe
|1|HbdjeVim+BsjjmZF5ssnPtkKOgM=|aWnWESfiV3H6AP9MpLjRUqdqqhA= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFtFa+BJXYXBrF5Xr3llzhInBUzYha98BGK57qDoXbVe
";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("/h/.ssh/known_hosts"), text)
    }

    #[test]
    fn names_follow_openssh() {
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert_eq!(
            host_name(&Host::Dns("HV1.example.org".into()), 22),
            "hv1.example.org"
        );
        assert_eq!(host_name(&ip("127.0.0.1"), 2299), "[127.0.0.1]:2299");
        assert_eq!(host_name(&ip("::1"), 22), "::1");
        assert_eq!(host_name(&ip("::1"), 2222), "[::1]:2222");
    }

    #[test]
    fn fingerprint_is_ssh_keygen_l() {
        assert_eq!(
            fingerprint(&key(A)),
            "SHA256:HvuvDsiatrZdEmL5uU3dXe3ocv15xyVfsoIcuESPNM4"
        );
        assert_eq!(
            fingerprint(&key(C)),
            "SHA256:wnTb4+fP/bQufl7Qy+kb7lu00Frp69cZg2W6bjvUlfs"
        );
    }

    #[test]
    fn plain_entries_with_ports_lists_and_comments() {
        let text =
            format!("# my hosts\n\nhv1.example.org,10.0.0.1 {A} root@hv1\n[127.0.0.1]:2299 {B}\n");
        let k = kh(&text);
        assert_eq!(
            k.check("hv1.example.org", &key(A)),
            Verdict::Known { line: 3 }
        );
        assert_eq!(k.check("10.0.0.1", &key(A)), Verdict::Known { line: 3 });
        assert_eq!(
            k.check("[127.0.0.1]:2299", &key(B)),
            Verdict::Known { line: 4 }
        );
        // the same address on port 22 is another host
        assert_eq!(
            k.check("127.0.0.1", &key(B)),
            Verdict::Unknown {
                other_types: vec![]
            }
        );
        // a changed key names the old line (comments and blank lines counted)
        assert_eq!(
            k.check("hv1.example.org", &key(B)),
            Verdict::Changed { line: 3 }
        );
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        let k = kh(HASHED);
        assert_eq!(
            k.check("hv1.example.org", &key(A)),
            Verdict::Known { line: 1 }
        );
        assert_eq!(
            k.check("[127.0.0.1]:2299", &key(A)),
            Verdict::Known { line: 2 }
        );
        assert_eq!(k.check("::1", &key(B)), Verdict::Known { line: 3 });
        assert_eq!(k.check("::1", &key(A)), Verdict::Changed { line: 3 });
        assert_eq!(
            k.check("[::1]:2299", &key(A)),
            Verdict::Unknown {
                other_types: vec![]
            }
        );
    }

    #[test]
    fn other_key_types_are_not_a_change() {
        let k = kh(&format!("hv1 {C}\n"));
        assert_eq!(
            k.check("hv1", &key(A)),
            Verdict::Unknown {
                other_types: vec!["ecdsa-sha2-nistp256".into()]
            }
        );
        assert_eq!(k.algorithms_for("hv1"), vec![key(C).algorithm()]);
        assert!(k.algorithms_for("hv2").is_empty());
    }

    #[test]
    fn markers_wildcards_and_negation() {
        let text = format!(
            "@cert-authority *.example.org {B}\n@revoked * {C}\n*.lab,!secret.lab {A}\n\
             garbage line here\nhv9 ssh-ed25519 not-base64\n"
        );
        let k = kh(&text);
        assert_eq!(k.check("web.lab", &key(A)), Verdict::Known { line: 3 });
        assert_eq!(
            k.check("secret.lab", &key(A)),
            Verdict::Unknown {
                other_types: vec![]
            }
        );
        // a CA line is not a host key
        assert_eq!(
            k.check("x.example.org", &key(B)),
            Verdict::Unknown {
                other_types: vec![]
            }
        );
        assert_eq!(k.check("anything", &key(C)), Verdict::Revoked { line: 2 });
        assert!(glob("h?v*", "hxv1.b") && !glob("h?v", "hv") && glob("*", ""));
    }

    #[test]
    fn append_creates_private_files_and_is_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".ssh/known_hosts");
        append(&path, "[::1]:2299", &key(&format!("{A} comment"))).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        // a file without a final newline gets one before the new entry
        std::fs::write(&path, format!("hv1 {B}")).unwrap();
        append(&path, "[::1]:2299", &key(A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("hv1 {B}\n[::1]:2299 {A}\n"));
        let k = KnownHosts::load(&path).unwrap();
        assert_eq!(k.check("[::1]:2299", &key(A)), Verdict::Known { line: 2 });
        assert!(KnownHosts::load(&dir.path().join("none"))
            .unwrap()
            .entries
            .is_empty());
    }
}
