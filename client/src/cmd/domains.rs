//! `whoami`, `list` and `info`: one API call each, printed as the gateway's JSON (`--json`)
//! or for people (aligned table, `key: value` lines).

use std::fmt::Write as _;

use virtgate_proto::{ApiPath, ConsoleKind, Domain, DomainList, WhoAmI};

use super::{json, print};
use crate::error::Error;
use crate::session::Session;

/// `virtgate whoami`
pub async fn whoami(session: &Session, as_json: bool) -> Result<(), Error> {
    let me: WhoAmI = session.get_json(&ApiPath::WhoAmI).await?;
    if as_json {
        return print(&json(&me)?);
    }
    let mut rows = vec![("user", me.user.clone()), ("method", me.method.to_string())];
    if let Some(p) = &me.principal {
        rows.push(("principal", p.clone()));
    }
    if !me.groups.is_empty() {
        rows.push(("groups", me.groups.join(", ")));
    }
    if let Some(p) = &me.peer {
        rows.push(("peer", p.clone()));
    }
    rows.push((
        "gateway",
        format!("{} (virtgated {})", session.server(), me.gateway_version),
    ));
    print(&key_values(&rows))
}

/// `virtgate list`
pub async fn list(session: &Session, as_json: bool) -> Result<(), Error> {
    let list: DomainList = session.get_json(&ApiPath::Domains).await?;
    if as_json {
        return print(&json(&list)?);
    }
    print(&table(&list.domains))?;
    if list.domains.is_empty() {
        eprintln!(
            "note: the gateway shows you no domains; ask its admin for a [[rule]] that grants you some"
        );
    }
    Ok(())
}

/// `virtgate info DOM`
pub async fn info(session: &Session, name: &str, as_json: bool) -> Result<(), Error> {
    let d: Domain = session.get_json(&ApiPath::Domain(name.to_owned())).await?;
    if as_json {
        return print(&json(&d)?);
    }
    print(&describe(&d))
}

/// The people-facing lines of `info`.
pub fn describe(d: &Domain) -> String {
    let mut state = d.state.to_string();
    if let Some(r) = &d.state_reason {
        let _ = write!(state, " ({r})");
    }
    let mut rows = vec![("name", d.name.clone())];
    if let Some(u) = &d.uuid {
        rows.push(("uuid", u.clone()));
    }
    rows.push(("state", state));
    rows.push(("vcpus", d.vcpus.map(|v| v.to_string()).unwrap_or_else(dash)));
    rows.push(("memory", memory(d.memory_mib)));
    rows.push(("consoles", consoles(&d.consoles)));
    rows.push(("role", d.role.clone().unwrap_or_else(dash)));
    key_values(&rows)
}

fn dash() -> String {
    "-".to_owned()
}

/// `64 MiB`, `2 GiB`, `1536 MiB`, `-`.
pub fn memory(mib: Option<u64>) -> String {
    match mib {
        None => dash(),
        Some(m) if m >= 1024 && m % 1024 == 0 => format!("{} GiB", m / 1024),
        Some(m) => format!("{m} MiB"),
    }
}

/// `vnc,spice,serial` or `-`.
pub fn consoles(c: &[ConsoleKind]) -> String {
    if c.is_empty() {
        return dash();
    }
    c.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
}

/// The `list` table: NAME STATE VCPUS MEMORY CONSOLES ROLE, columns aligned, two spaces
/// apart, no trailing blanks.
pub fn table(domains: &[Domain]) -> String {
    let header = ["NAME", "STATE", "VCPUS", "MEMORY", "CONSOLES", "ROLE"].map(String::from);
    let mut rows = vec![header.to_vec()];
    for d in domains {
        rows.push(vec![
            d.name.clone(),
            d.state.to_string(),
            d.vcpus.map(|v| v.to_string()).unwrap_or_else(dash),
            memory(d.memory_mib),
            consoles(&d.consoles),
            d.role.clone().unwrap_or_else(dash),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<w$}", w = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned.
fn key_values(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtgate_proto::DomainState;

    fn dom(name: &str, state: DomainState) -> Domain {
        Domain {
            name: name.into(),
            uuid: None,
            state,
            state_reason: None,
            vcpus: Some(1),
            memory_mib: Some(64),
            consoles: vec![ConsoleKind::Vnc],
            role: Some("admin".into()),
        }
    }

    #[test]
    fn table_is_aligned() {
        let mut big = dom("web-frontend-1", DomainState::ShutOff);
        big.vcpus = Some(16);
        big.memory_mib = Some(4096);
        big.consoles = vec![ConsoleKind::Vnc, ConsoleKind::Serial];
        big.role = None;
        let t = table(&[dom("vm1", DomainState::Running), big]);
        assert_eq!(
            t,
            "NAME            STATE     VCPUS  MEMORY  CONSOLES    ROLE\n\
             vm1             running   1      64 MiB  vnc         admin\n\
             web-frontend-1  shut_off  16     4 GiB   vnc,serial  -\n"
        );
    }

    #[test]
    fn consoles_use_the_wire_names() {
        let all = [ConsoleKind::Vnc, ConsoleKind::Spice, ConsoleKind::Serial];
        assert_eq!(consoles(&all), "vnc,spice,serial");
        assert_eq!(consoles(&[]), "-");
    }

    #[test]
    fn empty_list_is_just_the_header() {
        assert_eq!(table(&[]), "NAME  STATE  VCPUS  MEMORY  CONSOLES  ROLE\n");
    }

    #[test]
    fn memory_and_info() {
        assert_eq!(memory(Some(1536)), "1536 MiB");
        assert_eq!(memory(Some(2048)), "2 GiB");
        assert_eq!(memory(None), "-");
        let mut d = dom("vm1", DomainState::Unavailable);
        d.state_reason = Some("QMP socket gone".into());
        let s = describe(&d);
        assert!(
            s.contains("state:    unavailable (QMP socket gone)\n"),
            "{s}"
        );
        assert!(s.starts_with("name:     vm1\n"), "{s}");
    }
}
