//! Reading and parsing the configuration file, with errors a person can act on.
//!
//! toml reports a byte span for every error; this module turns it into `FILE:LINE:COLUMN`,
//! names the table the error is in, and, for unknown keys and values, lists what is valid
//! there (serde's "expected one of ..." turned into a hint).

use std::fmt;
use std::path::{Path, PathBuf};

use super::{perms, validate, Config, Invalid};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file we tried.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Not TOML, or TOML that does not fit the schema.
    #[error(transparent)]
    Parse(#[from] Box<ParseError>),
    /// Well-formed but inconsistent or incomplete (see [`validate`]).
    #[error("{}", invalid_summary(path, problems))]
    Invalid {
        /// The file the problems are in.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Invalid>,
    },
    /// A key others may read, or a file the gateway trusts others may change
    /// ([`perms`]).
    #[error(transparent)]
    Mode(#[from] perms::ModeError),
}

fn invalid_summary(path: &Path, problems: &[Invalid]) -> String {
    match problems {
        [one] => format!("{}: {one}", path.display()),
        many => {
            let mut s = format!("{}: {} problems", path.display(), many.len());
            for p in many {
                s.push_str(&format!("\n  {p}\n    hint: {}", p.hint));
            }
            s
        }
    }
}

impl ConfigError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Read { path, source } => Some(match source.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "create {} (see `virtgated schema` and deploy/ for an example) or pass --config FILE",
                    path.display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "the gateway's user cannot read {}: check its owner and mode",
                    path.display()
                ),
                _ => "check the path given with --config or VIRTGATE_GATEWAY_CONFIG".into(),
            }),
            ConfigError::Parse(p) => p.hint.clone(),
            ConfigError::Invalid { problems, .. } => match problems.as_slice() {
                [one] => Some(one.hint.clone()),
                _ => Some("fix each problem above, then run `virtgated check-config`".into()),
            },
            ConfigError::Mode(e) => Some(e.hint()),
        }
    }
}

/// A TOML syntax error or a value that does not fit the schema, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file (or a stand-in name for text that came from elsewhere).
    pub path: PathBuf,
    /// 1-based line of the offending text, when toml located it.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending text.
    pub column: Option<usize>,
    /// toml's / serde's description of the problem.
    pub message: String,
    /// The table the error is in (`[listen]`, `[[backend.domain]]`), when known.
    pub table: Option<String>,
    /// What to do: the valid keys or values there.
    pub hint: Option<String>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(t) = &self.table {
            write!(f, " (in {t})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

/// Read, parse and validate the file at `path`, then check the modes of the file and of the
/// keys, certificates and CRL it names ([`perms::check`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = parse(&text, path)?;
    let problems = validate(&config);
    if problems.is_empty() {
        perms::check(&config, path)?;
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

/// Parse `text` (whose origin is `path`, for messages) without validating it.
pub fn parse(text: &str, path: &Path) -> Result<Config, Box<ParseError>> {
    toml::from_str::<Config>(text).map_err(|e| {
        let span = e.span();
        let (line, column) = match &span {
            Some(s) => {
                let (l, c) = line_col(text, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let table = span.as_ref().map(|s| table_at(text, s.start));
        let full = e.message().trim().to_owned();
        let hint = hint_for(&full, table.as_deref());
        // The hint lists the valid keys; the message need not repeat them.
        let message = match (&hint, full.split_once(", expected")) {
            (Some(_), Some((head, _))) if full.starts_with("unknown field") => head.to_owned(),
            _ => full,
        };
        Box::new(ParseError {
            path: path.to_owned(),
            line,
            column,
            message,
            table,
            hint,
        })
    })
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The header of the table that contains byte `offset`: the last `[...]` line before it.
/// An error ON a header line (an unknown table name) is in that table's parent: the top
/// level for `[name]`, `[backend]` for `[[backend.nme]]`.
fn table_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let current = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or("")
        .trim_start();
    if current.starts_with('[') {
        let name = current.trim_start_matches('[');
        let name = name.split(']').next().unwrap_or("").trim();
        return match name.rsplit_once('.') {
            Some((parent, _)) => format!("[{}]", parent.trim()),
            None => "the top level".to_owned(),
        };
    }
    let header = text
        .get(..line_start)
        .unwrap_or("")
        .lines()
        .rev()
        .map(str::trim_start)
        .find(|l| l.starts_with('['));
    match header {
        Some(h) => {
            let end = if h.starts_with("[[") {
                h.find("]]").map(|i| i + 2)
            } else {
                h.find(']').map(|i| i + 1)
            };
            h[..end.unwrap_or(h.len())].to_owned()
        }
        None => "the top level".to_owned(),
    }
}

/// Turn serde's "expected one of `a`, `b`" into a hint naming the valid keys or values.
fn hint_for(message: &str, table: Option<&str>) -> Option<String> {
    let where_ = table.unwrap_or("this table");
    let expected = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .map(|(_, list)| list.replace('`', ""));
    if message.starts_with("unknown field") {
        let list = expected.unwrap_or_else(|| "none".into());
        return Some(format!(
            "valid keys in {where_}: {list} (`virtgated schema` prints them all)"
        ));
    }
    if message.starts_with("unknown variant") {
        return expected.map(|list| format!("use one of: {list}"));
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return Some(format!("add {} to {where_}", rest.replace('`', "")));
    }
    if message.starts_with("invalid type") {
        return Some(format!(
            "check the value's type in {where_} (strings in quotes, lists in [ ], numbers bare)"
        ));
    }
    Some(
        "fix the TOML there (tables are [name], values key = \"text\"); `virtgated check-config` checks the file without touching a running gateway"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[listen]
tcp = ["[::]:0"]

[tls]
cert = "/etc/virtgate/pki/server.pem"
key = "/etc/virtgate/pki/server.key"
client_ca = "/etc/virtgate/pki/ca.pem"

[backend]
kind = "qemu"

[[backend.domain]]
name = "web1"
qmp = "/run/virtgate/web1/qmp.sock"
vnc = "/run/virtgate/web1/vnc.sock"

[[rule]]
who = ["alice"]
domains = ["web*"]
role = "operator"
"#;

    fn parse_str(text: &str) -> Result<Config, Box<ParseError>> {
        parse(text, Path::new("gw.toml"))
    }

    #[test]
    fn the_contract_example_parses() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.backend.domains[0].name, "web1");
        assert_eq!(c.limits.max_connections, 1024);
        assert!(crate::config::validate(&c).is_empty());
    }

    #[test]
    fn unknown_key_is_located_and_lists_valid_keys() {
        let text = GOOD.replace("vnc = \"/run", "vcn = \"/run");
        let e = parse_str(&text).unwrap_err();
        let line = text.lines().position(|l| l.starts_with("vcn")).unwrap() + 1;
        assert_eq!((e.line, e.column), (Some(line), Some(1)), "{e}");
        assert_eq!(e.table.as_deref(), Some("[[backend.domain]]"));
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("gw.toml:{line}:1: unknown field `vcn`")),
            "{shown}"
        );
        let hint = e.hint.unwrap();
        assert!(
            hint.contains("[[backend.domain]]") && hint.contains("qmp") && hint.contains("serial"),
            "{hint}"
        );
    }

    #[test]
    fn unknown_top_level_table_and_bad_role_are_reported() {
        let e = parse_str(&format!("{GOOD}\n[extra]\nx = 1\n")).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{e}");
        assert_eq!(e.table.as_deref(), Some("the top level"), "{e}");
        assert!(!e.to_string().contains("(in [)"), "{e}");
        assert!(e.hint.unwrap().contains("listen"));
        let e = parse_str(&GOOD.replace("[[backend.domain]]", "[[backend.domian]]")).unwrap_err();
        assert_eq!(e.table.as_deref(), Some("[backend]"), "{e}");
        // a syntax error has a hint too
        let e = parse_str(&GOOD.replace("[listen]", "[listen")).unwrap_err();
        assert!(
            e.hint.as_deref().unwrap_or("").contains("check-config"),
            "{e}"
        );
        let e = parse_str(&GOOD.replace("\"operator\"", "\"superuser\"")).unwrap_err();
        assert!(e.message.contains("superuser"));
        assert_eq!(
            e.hint.as_deref(),
            Some("use one of: viewer, operator, admin")
        );
    }

    #[test]
    fn type_errors_and_missing_keys_have_positions() {
        let e = parse_str(&GOOD.replace("tcp = [\"[::]:0\"]", "tcp = 16520")).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.hint.is_some());
        let e =
            parse_str(&GOOD.replace("qmp = \"/run/virtgate/web1/qmp.sock\"\n", "")).unwrap_err();
        assert!(e.message.contains("qmp"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_col("ab\ncdé\nx", 7), (2, 4));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load(Path::new("/nonexistent/virtgate.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/virtgate.toml"));
        assert!(e.hint().unwrap().contains("--config"));
    }
}
