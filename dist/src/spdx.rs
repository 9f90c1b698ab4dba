//! SPDX licence expressions (`MIT OR Apache-2.0`, `Apache-2.0 AND ISC`,
//! `Apache-2.0 WITH LLVM-exception`, the old `MIT/Apache-2.0`) and the allow-list the
//! package is held to: the equivalent of `cargo deny check licenses`.
//!
//! A crate is accepted when its expression can be satisfied with allowed licences: one
//! side of each OR, both sides of each AND. Copyleft licences are allowed per crate only
//! ([`ALLOWED_FOR`]), after someone read what linking them means (the `virt` bindings to
//! libvirt are LGPL-2.1, like libvirt itself).

use crate::inventory::Crate;

/// Licences any crate may have: permissive, compatible with shipping Apache-2.0 binaries.
pub const ALLOWED: &[&str] = &[
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "MIT",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "0BSD",
    "ISC",
    "Zlib",
    "Unicode-3.0",
    "Unlicense",
    "CDLA-Permissive-2.0",
];

/// Licences allowed for some crates only: (licence, crates).
pub const ALLOWED_FOR: &[(&str, &[&str])] = &[
    // libvirt's own Rust bindings; libvirt is LGPL-2.1-or-later. Dynamic linking of
    // libvirt.so.0; the bindings themselves are linked statically: the source of the
    // whole program is public, so the LGPL's relinking condition is met.
    ("LGPL-2.1", &["virt", "virt-sys"]),
];

/// A licence expression as a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// One licence, with its exception if any (`Apache-2.0 WITH LLVM-exception`).
    License(String),
    /// Either side.
    Or(Box<Expr>, Box<Expr>),
    /// Both sides.
    And(Box<Expr>, Box<Expr>),
}

/// Crates whose licence is not allowed.
#[derive(Debug, thiserror::Error)]
#[error("{} crate(s) with a licence outside the allow-list: {}", crates.len(), list(crates))]
pub struct Refused {
    /// The crates.
    pub crates: Vec<Crate>,
}

/// `name version (licence)`, comma-separated.
fn list(crates: &[Crate]) -> String {
    crates
        .iter()
        .map(|c| format!("{} {} ({})", c.name, c.version, display(&c.license)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The licence as shown: `(none)` when empty.
fn display(license: &str) -> &str {
    if license.is_empty() {
        "none declared"
    } else {
        license
    }
}

impl Refused {
    /// What to do about it.
    pub fn hint(&self) -> String {
        "read the licence; if linking it is fine, add it to ALLOWED (any crate) or ALLOWED_FOR \
         (this crate) in dist/src/spdx.rs, then `virtgate-dist copyright > \
         deploy/debian/copyright`; otherwise drop the dependency"
            .to_string()
    }
}

/// The crates of `crates` whose licence is not allowed.
pub fn refused(crates: &[Crate]) -> Vec<Crate> {
    crates
        .iter()
        .filter(|c| !allowed(&c.name, &c.license))
        .cloned()
        .collect()
}

/// Whether crate `name` may have licence expression `license`.
pub fn allowed(name: &str, license: &str) -> bool {
    match parse(license) {
        Some(expr) => satisfied(&expr, &|id: &str| {
            ALLOWED.contains(&id)
                || ALLOWED_FOR
                    .iter()
                    .any(|(l, crates)| *l == id && crates.contains(&name))
        }),
        None => false,
    }
}

/// Whether `expr` can be met with the licences `ok` accepts.
fn satisfied(expr: &Expr, ok: &dyn Fn(&str) -> bool) -> bool {
    match expr {
        Expr::License(id) => ok(id),
        Expr::Or(a, b) => satisfied(a, ok) || satisfied(b, ok),
        Expr::And(a, b) => satisfied(a, ok) && satisfied(b, ok),
    }
}

/// Parses an expression; `None` when it is empty or malformed.
pub fn parse(text: &str) -> Option<Expr> {
    let tokens = tokenize(text);
    let mut pos = 0;
    let expr = parse_or(&tokens, &mut pos)?;
    (pos == tokens.len()).then_some(expr)
}

/// Splits into identifiers, `(`, `)`, OR, AND, WITH; `/` is the old spelling of OR.
fn tokenize(text: &str) -> Vec<String> {
    let spaced = text
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    spaced.split_whitespace().map(str::to_string).collect()
}

/// `or := and (OR and)*`
fn parse_or(t: &[String], pos: &mut usize) -> Option<Expr> {
    let mut left = parse_and(t, pos)?;
    while t.get(*pos).is_some_and(|s| s.eq_ignore_ascii_case("OR")) {
        *pos += 1;
        let right = parse_and(t, pos)?;
        left = Expr::Or(Box::new(left), Box::new(right));
    }
    Some(left)
}

/// `and := atom (AND atom)*`
fn parse_and(t: &[String], pos: &mut usize) -> Option<Expr> {
    let mut left = parse_atom(t, pos)?;
    while t.get(*pos).is_some_and(|s| s.eq_ignore_ascii_case("AND")) {
        *pos += 1;
        let right = parse_atom(t, pos)?;
        left = Expr::And(Box::new(left), Box::new(right));
    }
    Some(left)
}

/// `atom := ( or ) | ID [WITH ID]`
fn parse_atom(t: &[String], pos: &mut usize) -> Option<Expr> {
    let tok = t.get(*pos)?;
    *pos += 1;
    if tok == "(" {
        let inner = parse_or(t, pos)?;
        (t.get(*pos)? == ")").then_some(())?;
        *pos += 1;
        return Some(inner);
    }
    if [")", "OR", "AND", "WITH"]
        .iter()
        .any(|k| tok.eq_ignore_ascii_case(k))
    {
        return None;
    }
    let mut id = tok.clone();
    if t.get(*pos).is_some_and(|s| s.eq_ignore_ascii_case("WITH")) {
        let exception = t.get(*pos + 1)?;
        id = format!("{id} WITH {exception}");
        *pos += 2;
    }
    Some(Expr::License(id))
}

/// Every licence identifier in an expression (with exceptions), in order, once each.
pub fn identifiers(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::License(id) => {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        Expr::Or(a, b) | Expr::And(a, b) => {
            identifiers(a, out);
            identifiers(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert!(allowed("x", "MIT OR Apache-2.0"));
        assert!(allowed("x", "MIT/Apache-2.0"));
        assert!(allowed("x", "Apache-2.0 / MIT"));
        assert!(allowed("x", "(MIT OR Apache-2.0) AND Unicode-3.0"));
        assert!(allowed(
            "x",
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"
        ));
        assert!(allowed("x", "MIT OR Apache-2.0 OR LGPL-2.1-or-later"));
        assert!(allowed("x", "Apache-2.0 AND ISC"));
        assert!(!allowed("x", "GPL-3.0"));
        assert!(!allowed("x", "MIT AND GPL-3.0"));
        assert!(!allowed("x", ""));
        assert!(!allowed("x", "MIT OR"));
        assert!(!allowed("x", "(MIT"));
        assert!(allowed("virt", "LGPL-2.1"));
        assert!(!allowed("some-other-crate", "LGPL-2.1"));
        let mut ids = Vec::new();
        identifiers(
            &parse("(MIT OR Apache-2.0) AND Unicode-3.0").unwrap(),
            &mut ids,
        );
        assert_eq!(ids, ["MIT", "Apache-2.0", "Unicode-3.0"]);
    }
}
